"""Typed sampler options: each sampler's ``Options`` dataclass, checked by the schema layer's one value checker.

Ranges: a field may carry bounds in its metadata (``fastdiff.schema.opt(7.0, gt=0)``); options that mean the
same in every sampler get their ranges by name (``NAMED_RANGES``), so a new sampler declaring ``rho`` or
``sigma_min`` is checked without writing anything; ``sigma_min < sigma_max`` is checked whenever both exist.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from fastdiff.schema.types import ConfigError, check_range, check_value

# bounds of options shared across samplers (field metadata wins where a sampler declares its own)
NAMED_RANGES: dict[str, dict[str, float]] = {
    "rho": {"gt": 0}, "sigma_min": {"gt": 0}, "sigma_max": {"gt": 0}, "t_eps": {"gt": 0, "lt": 1},
    "eta": {"ge": 0}, "s_noise": {"ge": 0}, "S_noise": {"ge": 0}, "S_churn": {"ge": 0},
}


def build_options(cls: type, owner: str, values: dict[str, Any]) -> Any:
    """Instantiate the options dataclass ``cls`` from ``values`` with typed and range checks and clear errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for sampler {owner!r} — valid options: "
                        f"{', '.join(fields) or '(none)'}")
    from .base import SamplerError  # options.py is imported by base.py

    hints = typing.get_type_hints(cls)
    checked = {}
    try:
        for key, val in values.items():
            where = f"sampler {owner!r} option {key}"
            checked[key] = check_value(where, val, hints[key])
            check_range(where, checked[key], fields[key].metadata or NAMED_RANGES.get(key, {}))
    except ConfigError as err:
        raise SamplerError(str(err)) from None
    options = cls(**checked)
    lo, hi = getattr(options, "sigma_min", None), getattr(options, "sigma_max", None)
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and not lo < hi:
        raise SamplerError(f"sampler {owner!r} option sigma_min: {lo!r} is not below sigma_max={hi!r} — "
                           "need 0 < sigma_min < sigma_max")
    return options
