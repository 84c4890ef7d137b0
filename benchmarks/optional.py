"""Optional imports of the peers (never fastdiff dependencies): a module, or None when it cannot be imported."""
from __future__ import annotations

import importlib
from typing import Any

_CACHE: dict[str, Any] = {}


def optional_module(name: str) -> Any | None:
    """``import name``, cached; None (also cached) when it is missing."""
    if name not in _CACHE:
        try:
            _CACHE[name] = importlib.import_module(name)
        except ImportError:
            _CACHE[name] = None
    return _CACHE[name]
