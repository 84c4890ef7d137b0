"""Configuration: dataclass schemas, defaults <- YAML file <- CLI dotlist overrides, validation to a plain dict."""
from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import inspect
import os
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import yaml
from omegaconf import OmegaConf

from fastdiff.registry import Registry, UnknownNameError


class ConfigError(ValueError):
    """A configuration problem; the message is one line that names the offending key."""


# ---- fixed sections ---------------------------------------------------------------------------------------
def _opt(default: Any, **checks: Any) -> Any:
    """A dataclass field with range checks (gt, ge, lt, le) kept in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: _copy(default), metadata=checks)
    return field(default=default, metadata=checks)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


@dataclass
class OptimConfig:
    """Adam with linear warm-up; grad_clip is the global-norm clip value (null or 0 disables)."""

    lr: float = _opt(2.0e-4, gt=0)
    warmup_steps: int = _opt(200, ge=0)
    grad_clip: float | None = _opt(1.0, ge=0)
    weight_decay: float = _opt(0.0, ge=0)
    betas: list[float] = _opt([0.9, 0.999])
    eps: float = _opt(1.0e-8, gt=0)


@dataclass
class EMAConfig:
    """Exponential moving average of the weights; warmup: decay_t = min(decay, (1 + t) / (10 + t))."""

    decay: float = _opt(0.999, ge=0, lt=1)
    warmup: bool = True


@dataclass
class TrainerConfig:
    """Lightning Trainer options; ckpt_path is null, 'last' (out_dir/checkpoints/last.ckpt) or a path."""

    max_steps: int = _opt(2500, ge=1)
    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = 1
    num_nodes: int = _opt(1, ge=1)
    strategy: str = "auto"
    precision: Union[str, int] = "32-true"
    log_every_n_steps: int = _opt(50, ge=1)
    checkpoint_every_n_steps: int = _opt(500, ge=1)
    ckpt_path: str | None = None
    deterministic: bool = False
    limit_val_batches: Union[int, float] = _opt(1, ge=0)


@dataclass
class ModelConfig:
    """Parameterization (null: the process default) and the EDM preconditioning / noise-sampling constants."""

    parameterization: str | None = None
    sigma_data: float = _opt(0.5, gt=0)
    P_mean: float = -1.2
    P_std: float = _opt(1.2, gt=0)


@dataclass
class FinalSamplesConfig:
    """PNG grid drawn with EMA weights after training; n = 0 disables it."""

    sampler: str = "euler_maruyama"
    nfe: int = _opt(200, ge=1)
    n: int = _opt(64, ge=0)
    options: dict[str, Any] = _opt({})


SECTIONS: dict[str, type] = {
    "optim": OptimConfig, "ema": EMAConfig, "trainer": TrainerConfig, "model": ModelConfig,
    "final_samples": FinalSamplesConfig,
}
# registry-backed sections: {name, **options}; the default job is digits / VP / small UNet
REGISTRY_DEFAULTS: dict[str, dict[str, Any]] = {
    "process": {"name": "vp"},
    "net": {"name": "unet", "channels": 24, "channel_mult": [1, 2], "num_res_blocks": 1,
            "attn_resolutions": [4], "dropout": 0.1},
    "data": {"name": "digits", "batch_size": 128, "num_workers": 0, "hflip": False},
}
TOP_LEVEL: dict[str, Any] = {"seed": 0, "out_dir": "runs/digits_vp"}
# validation sampling of the embedded default job (configs/digits_vp.yaml holds the same; files start from []):
# every 500 of 2500 steps gives each val curve 5 points; one evaluation costs about 90-130 training steps of compute
DEFAULT_EVALUATION: list[dict[str, Any]] = [{
    "n_samples": 128, "every_n_steps": 500, "metrics": ["fd_digits", "kid_digits", "raw_fd"],
    "samplers": [{"sampler": "edm_heun", "nfe": [9, 19, 35]}, {"sampler": "restart", "nfe": [20, 43]},
                 {"sampler": "ggf", "options": [{"eps_rel": 0.1, "max_nfe": 300}]},
                 {"sampler": "euler_maruyama", "nfe": [20, 100]}]}]
TOP_KEYS = ["seed", "out_dir", "process", "net", "model", "data", "optim", "ema", "trainer", "final_samples",
            "evaluation"]
# constructor arguments filled from the data shape, never from the config
_FROM_SHAPE = "set automatically from the data shape; remove it"
RESERVED: dict[str, dict[str, str]] = {
    "net": {"in_channels": _FROM_SHAPE, "out_channels": _FROM_SHAPE, "image_size": _FROM_SHAPE},
    "data": {"split": "chosen by the data module (train for training, the validation split for validation); remove it"},
}


def _data_loader_options() -> dict[str, tuple[Any, Any]]:
    """Options of the data module itself ({key: (type hint, default)}), on top of the data set's options."""
    from fastdiff.data.datamodule import DiffusionDataModule

    params, hints, _ = constructor_params(DiffusionDataModule)
    return {k: (hints.get(k, Any), p.default) for k, p in params.items() if k != "name"}


def default_config() -> dict[str, Any]:
    """The embedded default job (digits, VP, small UNet) as a plain, unvalidated dict."""
    cfg: dict[str, Any] = dict(TOP_LEVEL)
    for key in TOP_KEYS:
        if key in REGISTRY_DEFAULTS:
            cfg[key] = _copy(REGISTRY_DEFAULTS[key])
        elif key in SECTIONS:
            cfg[key] = dataclasses.asdict(SECTIONS[key]())
    cfg["evaluation"] = []
    return cfg


# ---- type checking ----------------------------------------------------------------------------------------
def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "null")


def _show(value: Any) -> str:
    return f"{'null' if value is None else type(value).__name__} {value!r}"


_SCALARS: dict[Any, tuple[type, ...]] = {float: (int, float), int: (int,), bool: (bool,), str: (str,),
                                         type(None): (type(None),)}


def check_value(path: str, value: Any, hint: Any) -> Any:
    """Return ``value`` converted to the primitive form of ``hint`` (int -> float allowed) or raise ConfigError."""
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
        raise ConfigError(f"{path}: expected {_type_name(hint)}, got {_show(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list ({_type_name(hint)}), got {_show(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected a list of {len(args)} items, got {len(value)}")
            return [check_value(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args))]
        return [check_value(f"{path}[{i}]", v, args[0] if args else Any) for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        sub = args[1] if len(args) == 2 else Any
        return {str(k): check_value(f"{path}.{k}", v, sub) for k, v in value.items()}
    if hint in _SCALARS:
        if not isinstance(value, _SCALARS[hint]) or (isinstance(value, bool) and hint is not bool):
            raise ConfigError(f"{path}: expected {_type_name(hint)}, got {_show(value)}")
        return float(value) if hint is float else value
    return value  # a type this checker does not model (e.g. a tensor default): accepted unchecked


def _exact(value: Any, hint: Any) -> bool:
    """Whether value is already of the plain type hint (so unions prefer int over float for 3)."""
    if hint is type(None):
        return value is None
    base = typing.get_origin(hint) or hint
    return isinstance(base, type) and isinstance(value, base) and not (isinstance(value, bool) and base is not bool)


def _check_range(path: str, value: Any, meta: dict[str, Any]) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    ops = {"gt": (float.__gt__, ">"), "ge": (float.__ge__, ">="), "lt": (float.__lt__, "<"), "le": (float.__le__, "<=")}
    for key, bound in meta.items():
        fn, sym = ops[key]
        if not fn(float(value), float(bound)):
            raise ConfigError(f"{path}: must be {sym} {bound}, got {value!r}")


def _as_mapping(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
    return value


def validate_section(name: str, value: Any, schema: type) -> dict[str, Any]:
    """Validate one fixed section against its dataclass schema; missing keys take the schema defaults."""
    data = _as_mapping(name, value)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in data:
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown key; allowed: {', '.join(fields)}")
    out = dataclasses.asdict(schema())
    for key, val in data.items():
        out[key] = check_value(f"{name}.{key}", val, hints[key])
        _check_range(f"{name}.{key}", out[key], dict(fields[key].metadata))
    return out


# ---- registry-backed sections -----------------------------------------------------------------------------
def _registry(section: str, name: str | None = None) -> Registry[Any]:
    """The registry of a section, filled by importing its package (and its submodules if ``name`` is missing)."""
    from fastdiff import registry as reg

    package, table = {"process": ("fastdiff.processes", reg.PROCESSES), "net": ("fastdiff.nets", reg.NETS),
                      "data": ("fastdiff.data", reg.DATASETS), "sampler": ("fastdiff.samplers", reg.SAMPLERS)}[section]
    mod = importlib.import_module(package)
    if name is not None and name not in table:
        for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
            importlib.import_module(f"{package}.{info.name}")
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
                     reserved: dict[str, str] | None = None, extra: dict[str, tuple[Any, Any]] | None = None,
                     fill_defaults: bool = True) -> dict[str, Any]:
    """Check options against the constructor signature of ``obj`` (+ ``extra`` {key: (type, default)})."""
    params, hints, var_kw = constructor_params(obj)
    extra, reserved = extra or {}, reserved or {}
    allowed = [k for k in params if k not in reserved] + [k for k in extra if k not in params]
    out: dict[str, Any] = {}
    for key, val in options.items():
        if key in reserved:
            raise ConfigError(f"{path}.{key}: {reserved[key]}")
        if key in extra:
            out[key] = check_value(f"{path}.{key}", val, extra[key][0])
        elif key in params:
            out[key] = check_value(f"{path}.{key}", val, hints.get(key, Any))
        elif var_kw:
            out[key] = val
        else:
            raise ConfigError(f"{path}.{key}: unknown option for {kind} {name!r}; allowed: {', '.join(allowed)}")
    for key, p in params.items():
        if key in reserved or key in out:
            continue
        if p.default is inspect.Parameter.empty:
            raise ConfigError(f"{path}.{key}: required option of {kind} {name!r} is missing")
        if fill_defaults and _primitive(p.default):
            out[key] = _copy(list(p.default) if isinstance(p.default, tuple) else p.default)
    for key, (_, default) in extra.items():
        if fill_defaults and key not in out:
            out[key] = default
    order = [k for k in params if k in out] + [k for k in extra if k in out and k not in params]
    return {k: out[k] for k in order + [k for k in out if k not in order]}


def validate_registry_section(section: str, value: Any) -> dict[str, Any]:
    """Validate ``{name, **options}`` of process / net / data against the registered constructor."""
    data = dict(_as_mapping(section, value))
    name = data.pop("name", None)
    registry = _registry(section, name if isinstance(name, str) else None)
    if not isinstance(name, str):
        raise ConfigError(f"{section}.name: required string; registered: {', '.join(registry.names())}")
    try:
        obj = registry.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"{section}.name: {err}") from None
    extra = _data_loader_options() if section == "data" else None
    options = validate_options(section, data, obj, registry.kind, name, RESERVED.get(section), extra)
    return {"name": name, **options}


def _validate_final_samples(fs: dict[str, Any]) -> None:
    """Check the final sampler by constructing it (cheap): name, NFE budget and options."""
    if fs["n"] == 0:
        return
    registry = _registry("sampler", fs["sampler"])
    if fs["sampler"] not in registry:
        raise ConfigError(f"final_samples.sampler: unknown sampler {fs['sampler']!r}; "
                          f"registered: {', '.join(registry.names())}")
    from fastdiff.samplers import get_sampler

    try:
        get_sampler(fs["sampler"], nfe=fs["nfe"], **fs["options"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"final_samples: {str(err).splitlines()[0]}") from None


def validate_config(cfg: Any) -> dict[str, Any]:
    """Validate a whole merged config and return it as a plain dict with every default filled in."""
    cfg = _as_mapping("config", cfg)
    for key in cfg:
        if key not in TOP_KEYS:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(TOP_KEYS)}")
    full = {**default_config(), **cfg}
    out: dict[str, Any] = {"seed": check_value("seed", full["seed"], int),
                           "out_dir": check_value("out_dir", full["out_dir"], str)}
    for key in TOP_KEYS[2:]:
        if key in REGISTRY_DEFAULTS:
            out[key] = validate_registry_section(key, full[key])
        elif key in SECTIONS:
            out[key] = validate_section(key, full[key], SECTIONS[key])
    out["evaluation"] = check_value("evaluation", full["evaluation"], list[dict[str, Any]])
    par = out["model"]["parameterization"]
    proc = _registry("process").get(out["process"]["name"])
    allowed = getattr(proc, "parameterizations", None)
    if par is not None and allowed is not None and par not in allowed:
        raise ConfigError(f"model.parameterization: {par!r} is not supported by process "
                          f"{out['process']['name']!r}; allowed: {', '.join(allowed)}")
    _validate_final_samples(out["final_samples"])
    return {k: out[k] for k in TOP_KEYS}


# ---- loading and merging ----------------------------------------------------------------------------------
def merge(base: dict[str, Any], layer: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Recursive merge; lists are replaced. A registry section whose ``name`` changes starts afresh."""
    out = dict(base)
    for key, val in layer.items():
        old = out.get(key)
        if (not path and key in REGISTRY_DEFAULTS and isinstance(val, dict) and isinstance(old, dict)
                and "name" in val and val["name"] != old.get("name")):
            out[key] = _copy(val)
        elif isinstance(val, dict) and isinstance(old, dict):
            out[key] = merge(old, val, f"{path}{key}.")
        else:
            out[key] = _copy(val)
    return out


def parse_overrides(overrides: list[str]) -> list[dict[str, Any]]:
    """Each ``key.sub=value`` (value parsed as YAML by OmegaConf) as a nested dict, in order."""
    layers = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(f"{item}: overrides must look like key=value or section.key=value")
        try:
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=False)
        except Exception as err:  # omegaconf grammar errors
            raise ConfigError(f"{key}: cannot parse override {item!r} ({str(err).splitlines()[0]})") from None
        layers.append(parsed)
    return layers


def read_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file to a plain dict (an empty file is an empty dict)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: file not found: {path}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:
        raise ConfigError(f"--config: cannot parse {path}: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _resolve(cfg: dict[str, Any]) -> dict[str, Any]:
    """Resolve OmegaConf ``${...}`` interpolations in the merged config."""
    try:
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except Exception as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None


def load_config(path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file <- dotlist overrides, validated into a plain dict of primitives (no file and digits data:
    the embedded default job, validation sampling included)."""
    cfg = default_config()
    if path is not None:
        cfg = merge(cfg, read_yaml(path))
    layers = parse_overrides(list(overrides or []))
    for layer in layers:
        cfg = merge(cfg, layer)
    if path is None and cfg["data"].get("name") == "digits" and not any("evaluation" in la for la in layers):
        cfg["evaluation"] = _copy(DEFAULT_EVALUATION)  # its metrics are digits-specific
    return validate_config(_resolve(cfg))


class _Dumper(yaml.SafeDumper):
    """YAML dumper writing lists of scalars in flow style ([1, 2]) and mappings in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(v is None or isinstance(v, (bool, int, float, str)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def config_to_yaml(cfg: dict[str, Any]) -> str:
    """The config as YAML text that ``load_config`` reads back to the same dict."""
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
