"""Schema of the ``evaluation`` section (validation sampling during training), shared by the config loader and
the evaluation callback: keys, types and ranges of each block and sampler entry, sampler names and whether
each sampler supports the run's process. Sampler options and budgets are checked by building the samplers."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence, Union

from .sections import LOADER_KEYS
from .types import ConfigError, check_dataclass, check_value, opt, show


@dataclass
class EvalSamplerConfig:
    """One entry of ``samplers``: a fixed-step sampler at NFE budget(s), or an adaptive one with option dicts."""

    sampler: str
    nfe: Union[int, list[int], None] = None
    options: Union[dict[str, Any], list[dict[str, Any]], None] = None
    label: str | None = None


@dataclass
class EvaluationConfig:
    """One evaluation block; exactly one of every_n_steps / every_n_epochs."""

    samplers: list[dict[str, Any]]
    name: str = "val"
    n_samples: int = opt(128, ge=1)
    seeds: Union[int, str, list[int]] = 0
    batch_size: int = opt(128, ge=1)
    every_n_steps: int | None = opt(None, ge=1)
    every_n_epochs: int | None = opt(None, ge=1)
    metrics: list[str] = opt([])
    ema: bool = True
    log_images: bool = True
    n_images: int = opt(64, ge=0)
    features: dict[str, dict[str, Any]] | None = None
    reference: dict[str, str] | None = None
    ref_samples: int = opt(10000, ge=1)
    data: dict[str, Any] | None = None
    progress: bool = True


EVAL_KEYS = tuple(f.name for f in dataclasses.fields(EvaluationConfig))
SAMPLER_KEYS = tuple(f.name for f in dataclasses.fields(EvalSamplerConfig))


def check_sampler_entry(where: str, entry: Any, process: Any = None) -> dict[str, Any]:
    """Keys/types of one sampler entry, its registered name and (given a process) process support."""
    from fastdiff.samplers import SAMPLERS

    if not isinstance(entry, dict) or "sampler" not in entry:
        raise ConfigError(f"{where}: got {show(entry)} — expected a mapping with a 'sampler' key")
    e = check_dataclass(where, entry, EvalSamplerConfig)
    if e["sampler"] not in SAMPLERS:
        raise ConfigError(f"{where}.sampler: unknown sampler {e['sampler']!r} — registered: "
                          f"{', '.join(SAMPLERS.names())}")
    cls = SAMPLERS.get(e["sampler"])
    if process is not None and not cls.supports(process):
        raise ConfigError(f"{where}.sampler: {e['sampler']!r} does not support process {type(process).__name__} — "
                          f"use a sampler for it (e.g. euler_maruyama)")
    if e["label"] is not None and (not e["label"] or "/" in e["label"]):
        raise ConfigError(f"{where}.label: {e['label']!r} is not allowed — a non-empty name without '/'")
    return {k: v for k, v in e.items() if k in entry}


def validate_evaluation(cfg_list: Any, data: dict[str, Any] | None = None, process: Any = None,
                        ) -> list[dict[str, Any]]:
    """Check the ``evaluation`` list; fill name ("val") and data (the config's data section, loader keys dropped).

    Returns the blocks as given (plus name/data), so the callback's own defaults apply to the rest.
    """
    if not isinstance(cfg_list, (list, tuple)):
        raise ConfigError(f"evaluation: got {show(cfg_list)} — expected a list of evaluation blocks")
    out, names = [], set()
    for i, cfg in enumerate(cfg_list):
        where = f"evaluation[{i}]"
        cfg = {k: v for k, v in check_value(where, cfg, dict).items() if v is not None}
        full = check_dataclass(where, cfg, EvaluationConfig)
        if (full["every_n_steps"] is None) == (full["every_n_epochs"] is None):
            raise ConfigError(f"{where}: {'both' if full['every_n_steps'] else 'neither'} of every_n_steps and "
                              "every_n_epochs given — give exactly one")
        if not full["samplers"]:
            raise ConfigError(f"{where}.samplers: empty — give at least one {{sampler, nfe}}")
        if not isinstance(full["seeds"], int):
            from fastdiff.seeds import parse_seeds

            try:
                n = len(parse_seeds(full["seeds"]))
            except ValueError as err:
                raise ConfigError(f"{where}.seeds: {err}") from None
            if n != full["n_samples"]:
                raise ConfigError(f"{where}.seeds: {full['seeds']!r} gives {n} seeds but n_samples is "
                                  f"{full['n_samples']} — make them agree (or give a start seed)")
        for j, entry in enumerate(full["samplers"]):
            check_sampler_entry(f"{where}.samplers[{j}]", entry, process)
        cfg.setdefault("name", "val")
        if cfg["name"] in names:
            raise ConfigError(f"{where}.name: {cfg['name']!r} is used twice — give each evaluation a distinct name")
        names.add(cfg["name"])
        if cfg.get("data") is None and data:
            cfg["data"] = {k: v for k, v in data.items() if k not in LOADER_KEYS}
        out.append(cfg)
    return out

