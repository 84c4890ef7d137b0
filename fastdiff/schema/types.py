"""The one value checker of fastdiff: type hints + range metadata -> checked primitives, one-line errors.

Every config section, CLI argument, evaluation block and sampler option is checked here. Messages read
``<key>: <what was wrong> — <what is allowed>`` so a command line can print them as they are.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from dataclasses import field
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A bad input found before any work; the message is one line that names the offending key and value."""


def opt(default: Any, **checks: Any) -> Any:
    """A dataclass field with range checks (gt, ge, lt, le) kept in its metadata; list/dict defaults are copied."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy_value(default), metadata=checks)
    return field(default=default, metadata=checks)


def copy_value(value: Any) -> Any:
    """Deep copy of nested dicts/lists of primitives."""
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_value(v) for v in value]
    return value


def type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "null")


def show(value: Any) -> str:
    """``str 'abc'`` / ``null`` / ``int 3``: the value with its YAML-ish type, for messages."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 80 else text[:77] + '...'}"


_SCALARS: dict[Any, tuple[type, ...]] = {float: (int, float), int: (int,), bool: (bool,), str: (str,),
                                         type(None): (type(None),)}


def _exact(value: Any, hint: Any) -> bool:
    """Whether value is already of the plain type hint (so unions prefer int over float for 3)."""
    if hint is type(None):
        return value is None
    base = typing.get_origin(hint) or hint
    return isinstance(base, type) and isinstance(value, base) and not (isinstance(value, bool) and base is not bool)


def check_value(path: str, value: Any, hint: Any) -> Any:
    """Return ``value`` converted to the primitive form of ``hint`` (int -> float, tuple -> list) or raise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, (str, typing.ForwardRef)):
        return value
    if origin in (Union, types.UnionType):
        exact = [a for a in args if _exact(value, a)]
        for arg in exact + [a for a in args if a not in exact]:
            try:
                return check_value(path, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: got {show(value)} — expected {type_name(hint)}")
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise ConfigError(f"{path}: {value!r} is not allowed — allowed: {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: got {show(value)} — expected a list ({type_name(hint)})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: got a list of {len(value)} items — expected {len(args)}")
            return [check_value(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args))]
        return [check_value(f"{path}[{i}]", v, args[0] if args else Any) for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: got {show(value)} — expected a mapping")
        sub = args[1] if len(args) == 2 else Any
        return {str(k): check_value(f"{path}.{k}", v, sub) for k, v in value.items()}
    if hint in _SCALARS:
        if not isinstance(value, _SCALARS[hint]) or (isinstance(value, bool) and hint is not bool):
            raise ConfigError(f"{path}: got {show(value)} — expected {type_name(hint)}")
        if hint is float and not (float(value) == float(value) and abs(float(value)) != float("inf")):
            raise ConfigError(f"{path}: got {value!r} — expected a finite number")
        return float(value) if hint is float else value
    return value  # a type this checker does not model (e.g. a tensor default): accepted unchecked


_OPS = {"gt": (lambda a, b: a > b, ">"), "ge": (lambda a, b: a >= b, ">="), "lt": (lambda a, b: a < b, "<"),
        "le": (lambda a, b: a <= b, "<=")}


def check_range(path: str, value: Any, meta: collections.abc.Mapping[str, Any]) -> None:
    """Apply the gt/ge/lt/le bounds of a field's metadata to a number (other values pass)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for key, bound in meta.items():
        if key not in _OPS:
            continue
        fn, sym = _OPS[key]
        if not fn(float(value), float(bound)):
            raise ConfigError(f"{path}: {value!r} is out of range — must be {sym} {bound}")


def join(path: str, key: str) -> str:
    """``section.key`` (or ``key`` at the top level)."""
    return f"{path}.{key}" if path else key


def as_mapping(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: got {show(value)} — expected a mapping")
    return value


def check_dataclass(path: str, value: Any, schema: type, unknown_hint: str = "") -> dict[str, Any]:
    """Validate a mapping against a dataclass schema (names, types, ranges); missing keys take the defaults.

    Returns the plain dict (``dataclasses.asdict`` form). Required fields (no default) must be present.
    """
    data = as_mapping(path, value)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = typing.get_type_hints(schema)
    for key in data:
        if key not in fields:
            raise ConfigError(f"{join(path, key)}: unknown key — allowed: {', '.join(fields)}{unknown_hint}")
    out: dict[str, Any] = {}
    for key, f in fields.items():
        if key in data:
            out[key] = check_value(join(path, key), data[key], hints[key])
            check_range(join(path, key), out[key], f.metadata)
        elif f.default is not dataclasses.MISSING:
            out[key] = copy_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[key] = f.default_factory()
        else:
            raise ConfigError(f"{join(path, key)}: missing — it is required")
    return out


def parse_dataclass(path: str, value: Any, schema: type[Any]) -> Any:
    """``check_dataclass`` then build the dataclass instance (typed access for the code that uses it)."""
    return schema(**check_dataclass(path, value, schema))
