"""Lightning integration: DiffusionModule, EMA, checkpoint loading (imported lazily: Lightning is slow to import)."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DiffusionModule": "fastdiff.lightning.module",
    "EMA": "fastdiff.lightning.callbacks.ema",
    "load_score_model": "fastdiff.lightning.checkpoint",
    "load_checkpoint": "fastdiff.lightning.checkpoint",
    "CheckpointError": "fastdiff.lightning.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastdiff.lightning' has no attribute {name!r}")
