"""Sampler registry: ``get_sampler(name, nfe=N | steps=S, **options)``, ``list_samplers()``, ``register_sampler``.

Registration has one place: the ``@register_sampler("name")`` decorator on the class. Importing this package
imports every module in it (sorted by name, below), so a new sampler file is registered by existing in this folder;
nothing is listed by hand. Modules that define no sampler (base, grids, noise, options, adaptive) cost an import.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

from ..registry import SAMPLERS
from .adaptive import AdaptiveSampler
from .base import (CountedScore, SampleResult, Sampler, SamplerError, SamplingNaNError, StepSampler,
                   TimeGridSampler)
from .noise import NoiseSource


def register_sampler(name: str) -> Callable[[type[Sampler]], type[Sampler]]:
    """Class decorator adding a Sampler subclass to the registry under ``name`` (duplicates raise)."""

    def wrap(cls: type[Sampler]) -> type[Sampler]:
        if not (isinstance(cls, type) and issubclass(cls, Sampler)):
            raise TypeError(f"register_sampler({name!r}) must decorate a Sampler subclass, got {cls!r}")
        SAMPLERS.register(name)(cls)
        cls.name = name
        return cls

    return wrap


def get_sampler(name: str, nfe: int | None = None, steps: int | None = None, **options: Any) -> Sampler:
    """Build a registered sampler; unknown names list the registered ones."""
    return SAMPLERS.get(name)(nfe=nfe, steps=steps, **options)


def list_samplers() -> list[str]:
    return SAMPLERS.names()


def _import_all_modules() -> None:
    """Import every module of this package so each ``@register_sampler`` runs (sorted: a deterministic order)."""
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{mod}")


_import_all_modules()

__all__ = ["get_sampler", "list_samplers", "register_sampler", "Sampler", "StepSampler", "AdaptiveSampler",
           "TimeGridSampler", "SampleResult", "NoiseSource", "CountedScore", "SamplerError", "SamplingNaNError"]
