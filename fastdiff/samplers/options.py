"""Typed sampler options: dataclass fields checked against their annotations, with one-line errors."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` checked (and widened: int -> float, tuple -> list) against annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            try:
                return coerce(value, arm, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError(f"{where}: {value!r} is not {' | '.join(_type_name(a) for a in get_args(tp))}")
    if tp is type(None):
        if value is None:
            return None
        raise TypeError(f"{where}: expected None, got {value!r}")
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        raise ValueError(f"{where}: {value!r} is not allowed; allowed: {', '.join(repr(a) for a in get_args(tp))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{where}: expected a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} entries, got {len(value)}")
            return [coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"{where}: unsupported option type {tp!r}")


def build_options(cls: type, owner: str, values: dict[str, Any]) -> Any:
    """Instantiate the options dataclass ``cls`` from ``values`` with typed checks and clear errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for sampler {owner!r}; valid options: "
                        f"{', '.join(fields) or '(none)'}")
    hints = typing.get_type_hints(cls)
    checked = {k: coerce(v, hints[k], f"sampler {owner!r} option {k}") for k, v in values.items()}
    return cls(**checked)
