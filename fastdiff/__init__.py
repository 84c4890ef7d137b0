"""fastdiff: train score-based diffusion models (VE, VP, PSLD) and sample them fast."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["sample", "__version__"]


def __getattr__(name: str) -> Any:
    """Lazy exports: ``fastdiff.sample`` imports the sampler stack only when first used."""
    if name == "sample":
        from .api import sample

        return sample
    raise AttributeError(f"module 'fastdiff' has no attribute {name!r}")
