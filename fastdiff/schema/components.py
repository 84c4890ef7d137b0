"""Registry-backed sections (``process``, ``net``, ``data``, sampler options): ``{name, **options}`` checked
against the registered constructor's signature and type hints, then against the constructor itself (ranges)."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from typing import Any

from fastdiff.registry import Registry, UnknownNameError

from .sections import DataLoaderConfig
from .types import ConfigError, as_mapping, check_range, check_value, copy_value, show

# constructor arguments filled from the data shape or by the data module, never from the config
_FROM_SHAPE = "set automatically from the data shape; remove it"
RESERVED: dict[str, dict[str, str]] = {
    "net": {"in_channels": _FROM_SHAPE, "out_channels": _FROM_SHAPE, "image_size": _FROM_SHAPE},
    "data": {"split": "chosen by the data module (train for training, the validation split for validation); "
                      "remove it"},
}
_PACKAGES = {"process": "fastdiff.processes", "net": "fastdiff.nets", "data": "fastdiff.data",
             "sampler": "fastdiff.samplers"}


def registry_of(section: str, name: str | None = None) -> Registry[Any]:
    """The registry of a section, filled by importing its package (and its submodules if ``name`` is missing)."""
    from fastdiff import registry as reg

    table = {"process": reg.PROCESSES, "net": reg.NETS, "data": reg.DATASETS, "sampler": reg.SAMPLERS}[section]
    mod = importlib.import_module(_PACKAGES[section])
    if name is not None and name not in table:
        for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
            importlib.import_module(f"{_PACKAGES[section]}.{info.name}")
    return table


def constructor_params(obj: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(named parameters, resolved type hints, accepts **kwargs) of a registered class or factory."""
    sig = inspect.signature(obj)
    params = {k: p for k, p in sig.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k != "self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    hints: dict[str, Any] = {}
    for target in ((obj, obj.__init__) if isinstance(obj, type) else (obj,)):
        try:
            hints = {**typing.get_type_hints(target), **hints}
        except Exception:  # unresolvable annotations: options are then checked for names only
            pass
    return params, hints, var_kw


def _primitive(value: Any) -> bool:
    """Whether a constructor default can go into the config as it is (scalars and lists/tuples of them)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in items)


def validate_options(path: str, options: dict[str, Any], obj: Any, kind: str, name: str,
                     reserved: dict[str, str] | None = None, extra: type | None = None,
                     fill_defaults: bool = True) -> dict[str, Any]:
    """Check options against the constructor signature of ``obj`` (+ the fields of dataclass ``extra``)."""
    params, hints, var_kw = constructor_params(obj)
    reserved = reserved or {}
    extra_fields = {f.name: f for f in dataclasses.fields(extra)} if extra else {}
    extra_hints = typing.get_type_hints(extra) if extra else {}
    allowed = [k for k in params if k not in reserved] + [k for k in extra_fields if k not in params]
    out: dict[str, Any] = {}
    for key, val in options.items():
        if key in reserved:
            raise ConfigError(f"{path}.{key}: {show(val)} given — {reserved[key]}")
        if key in extra_fields:
            out[key] = check_value(f"{path}.{key}", val, extra_hints[key])
            check_range(f"{path}.{key}", out[key], extra_fields[key].metadata)
        elif key in params:
            out[key] = check_value(f"{path}.{key}", val, hints.get(key, Any))
        elif var_kw:
            out[key] = val
        else:
            raise ConfigError(f"{path}.{key}: unknown option for {kind} {name!r} — allowed: {', '.join(allowed)}")
    for key, p in params.items():
        if key in reserved or key in out or key in extra_fields:
            continue
        if p.default is inspect.Parameter.empty:
            raise ConfigError(f"{path}.{key}: missing — a required option of {kind} {name!r}")
        if fill_defaults and _primitive(p.default):
            out[key] = copy_value(p.default)
    for key, f in extra_fields.items():
        if fill_defaults and key not in out:
            out[key] = copy_value(f.default)
    order = [k for k in params if k in out] + [k for k in extra_fields if k in out and k not in params]
    return {k: out[k] for k in order + [k for k in out if k not in order]}


def validate_registry_section(section: str, value: Any) -> dict[str, Any]:
    """Validate ``{name, **options}`` of process / net / data against the registered constructor."""
    data = dict(as_mapping(section, value))
    name = data.pop("name", None)
    registry = registry_of(section, name if isinstance(name, str) else None)
    if not isinstance(name, str):
        raise ConfigError(f"{section}.name: got {show(name)} — registered: {', '.join(registry.names())}")
    try:
        obj = registry.get(name)
    except UnknownNameError:
        raise ConfigError(f"{section}.name: unknown {registry.kind} {name!r} — registered: "
                          f"{', '.join(registry.names())}") from None
    extra = DataLoaderConfig if section == "data" else None
    options = validate_options(section, data, obj, registry.kind, name, RESERVED.get(section), extra)
    return {"name": name, **options}


def build_process(section: dict[str, Any]) -> Any:
    """Construct the configured process: its own range checks become ``process.<key>`` errors."""
    from fastdiff.processes import get_process

    opts = {k: v for k, v in section.items() if k != "name"}
    try:
        return get_process(section["name"], **opts)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"process.{_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
