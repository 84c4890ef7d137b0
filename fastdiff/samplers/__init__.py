"""Sampler registry: ``get_sampler(name, nfe=N | steps=S, **options)``, ``list_samplers()``, ``register_sampler``."""
from __future__ import annotations

from typing import Any, Callable

from ..registry import SAMPLERS
from .base import (CountedScore, SampleResult, Sampler, SamplerError, SamplingNaNError, TimeGridSampler)
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


# sampler families register themselves on import
from . import adaptive, dpm_solver, dpmpp_sde, edm, exponential, linear_multistep, ode, restart, sde, splitting, unipc  # noqa: E402,F401,E501

__all__ = ["get_sampler", "list_samplers", "register_sampler", "Sampler", "TimeGridSampler", "SampleResult",
           "NoiseSource", "CountedScore", "SamplerError", "SamplingNaNError"]
