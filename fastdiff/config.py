"""Configuration: defaults <- YAML file <- CLI dotlist overrides, validated by the schema layer to a plain dict."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml
from omegaconf import OmegaConf

from fastdiff.schema import (ConfigError, EMAConfig, FinalSamplesConfig, ModelConfig, OptimConfig, TrainerConfig,
                             build_process, check_dataclass, check_devices, check_value, registry_of,
                             validate_evaluation, validate_registry_section)
from fastdiff.schema.types import copy_value

__all__ = ["ConfigError", "load_config", "validate_config", "default_config", "config_to_yaml", "merge",
           "parse_overrides", "read_yaml", "check_value", "validate_section", "SECTIONS", "TOP_KEYS"]

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


def validate_section(name: str, value: Any, schema: type) -> dict[str, Any]:
    """Validate one fixed section against its dataclass schema; missing keys take the schema defaults."""
    return check_dataclass(name, value, schema)


def default_config() -> dict[str, Any]:
    """The embedded default job (digits, VP, small UNet) as a plain, unvalidated dict."""
    cfg: dict[str, Any] = dict(TOP_LEVEL)
    for key in TOP_KEYS:
        if key in REGISTRY_DEFAULTS:
            cfg[key] = copy_value(REGISTRY_DEFAULTS[key])
        elif key in SECTIONS:
            cfg[key] = dataclasses.asdict(SECTIONS[key]())
    cfg["evaluation"] = []
    return cfg


def _check_final_samples(fs: dict[str, Any], process: Any) -> None:
    """Build the final sampler (cheap): name, NFE budget, options, and that it supports the process."""
    if fs["n"] == 0:
        return
    registry = registry_of("sampler", fs["sampler"])
    if fs["sampler"] not in registry:
        raise ConfigError(f"final_samples.sampler: unknown sampler {fs['sampler']!r} — registered: "
                          f"{', '.join(registry.names())}")
    from fastdiff.samplers import get_sampler

    try:
        sampler = get_sampler(fs["sampler"], nfe=fs["nfe"], **fs["options"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"final_samples: {str(err).splitlines()[0]}") from None
    if not sampler.supports(process):
        raise ConfigError(f"final_samples.sampler: {fs['sampler']!r} does not support process "
                          f"{type(process).__name__} — use one that does (e.g. euler_maruyama)")


def validate_config(cfg: Any) -> dict[str, Any]:
    """Validate a whole merged config and return it as a plain dict with every default filled in.

    Beyond names, types and ranges, the process is constructed (its parameter ranges), and the samplers of
    final_samples and evaluation are checked against it, so nothing found here can surface after training.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"config: got {type(cfg).__name__} — expected a mapping")
    for key in cfg:
        if key not in TOP_KEYS:
            raise ConfigError(f"{key}: unknown key — allowed: {', '.join(TOP_KEYS)}")
    full = {**default_config(), **cfg}
    out: dict[str, Any] = {"seed": check_value("seed", full["seed"], int),
                           "out_dir": check_value("out_dir", full["out_dir"], str)}
    if not out["out_dir"].strip():
        raise ConfigError("out_dir: empty — give a directory path")
    for key in TOP_KEYS[2:]:
        if key in REGISTRY_DEFAULTS:
            out[key] = validate_registry_section(key, full[key])
        elif key in SECTIONS:
            out[key] = validate_section(key, full[key], SECTIONS[key])
    check_devices("trainer.devices", out["trainer"]["devices"])
    process = build_process(out["process"])
    par = out["model"]["parameterization"]
    if par is not None and par not in process.parameterizations:
        raise ConfigError(f"model.parameterization: {par!r} is not supported by process "
                          f"{out['process']['name']!r} — allowed: {', '.join(process.parameterizations)}")
    _check_final_samples(out["final_samples"], process)
    out["evaluation"] = validate_evaluation(full["evaluation"], out["data"], process)
    return {k: out[k] for k in TOP_KEYS}


# ---- loading and merging ----------------------------------------------------------------------------------
def merge(base: dict[str, Any], layer: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Recursive merge; lists are replaced. A registry section whose ``name`` changes starts afresh."""
    out = dict(base)
    for key, val in layer.items():
        old = out.get(key)
        if (not path and key in REGISTRY_DEFAULTS and isinstance(val, dict) and isinstance(old, dict)
                and "name" in val and val["name"] != old.get("name")):
            out[key] = copy_value(val)
        elif isinstance(val, dict) and isinstance(old, dict):
            out[key] = merge(old, val, f"{path}{key}.")
        else:
            out[key] = copy_value(val)
    return out


def merge_overrides(cfg: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply override layers in order; a registry section's options given on the command line survive a later
    ``section.name=...`` (``data.batch_size=8 data.name=image_folder`` keeps the 8): the name is chosen first."""
    kept: dict[str, dict[str, Any]] = {}
    for layer in layers:
        cfg = merge(cfg, layer)
        for key in REGISTRY_DEFAULTS:
            if isinstance(layer.get(key), dict):
                kept[key] = merge(kept.get(key, {}), {k: v for k, v in layer[key].items() if k != "name"})
    for key, opts in kept.items():
        if isinstance(cfg.get(key), dict):
            cfg[key] = merge(cfg[key], opts, f"{key}.")
    return cfg


def parse_overrides(overrides: list[str]) -> list[dict[str, Any]]:
    """Each ``key.sub=value`` (value parsed as YAML by OmegaConf) as a nested dict, in order."""
    layers = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(f"{item}: not an override — write key=value or section.key=value")
        try:
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=False)
        except Exception as err:  # omegaconf grammar errors
            raise ConfigError(f"{key}: cannot parse {item!r} ({str(err).splitlines()[0]}) — "
                              "values are YAML: 3, 1e-3, true, null, [1, 2], {a: 1}") from None
        layers.append(parsed)
    return layers


def read_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file to a plain dict (an empty file is an empty dict)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: file not found: {path} — give an existing YAML file")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:
        raise ConfigError(f"--config: cannot parse {path}: {str(err).splitlines()[0]} — expected a YAML mapping"
                          ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} holds a {type(data).__name__} — it must hold a mapping at the top level")
    return data


def _resolve(cfg: dict[str, Any]) -> dict[str, Any]:
    """Resolve OmegaConf ``${...}`` interpolations in the merged config."""
    try:
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except Exception as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(err).splitlines()[0]} — interpolations look like ${{section.key}}") from None


def load_config(path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file <- dotlist overrides, validated into a plain dict of primitives (no file and digits data:
    the embedded default job, validation sampling included)."""
    cfg = default_config()
    if path is not None:
        cfg = merge(cfg, read_yaml(path))
    layers = parse_overrides(list(overrides or []))
    cfg = merge_overrides(cfg, layers)
    if path is None and cfg["data"].get("name") == "digits" and not any("evaluation" in la for la in layers):
        cfg["evaluation"] = _default_evaluation(cfg["process"].get("name"))  # its metrics are digits-specific
    return validate_config(_resolve(cfg))


def _default_evaluation(process: Any) -> list[dict[str, Any]]:
    """The default job's evaluation, keeping the samplers that support the chosen process (PSLD: no EDM view)."""
    from fastdiff.samplers.base import cls_supports

    registry, samplers = registry_of("process", process if isinstance(process, str) else None), registry_of("sampler")
    if not isinstance(process, str) or process not in registry:
        return copy_value(DEFAULT_EVALUATION)  # validation reports the unknown process
    proc = registry.get(process)
    out = copy_value(DEFAULT_EVALUATION)
    for block in out:
        block["samplers"] = [e for e in block["samplers"] if cls_supports(samplers.get(e["sampler"]), proc)]
    return out


class _Dumper(yaml.SafeDumper):
    """YAML dumper writing lists of scalars in flow style ([1, 2]) and mappings in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(v is None or isinstance(v, (bool, int, float, str)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def config_to_yaml(cfg: dict[str, Any]) -> str:
    """The config as YAML text that ``load_config`` reads back to the same dict."""
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
