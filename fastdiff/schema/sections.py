"""Typed sections of the train config and of sample.py's arguments (one dataclass each, defaults written once)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Union

from .types import ConfigError, opt

Precision = Literal["64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16",
                    "bf16", 64, 32, 16]
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"]
Devices = Union[int, str, list[int]]


@dataclass
class OptimConfig:
    """Adam with linear warm-up; grad_clip is the global-norm clip value (null or 0 disables)."""

    lr: float = opt(2.0e-4, ge=0)  # 0 freezes the weights (tests of evaluation/EMA use it)
    warmup_steps: int = opt(200, ge=0)
    grad_clip: float | None = opt(1.0, ge=0)
    weight_decay: float = opt(0.0, ge=0)
    betas: tuple[float, float] = opt([0.9, 0.999])
    eps: float = opt(1.0e-8, gt=0)


@dataclass
class EMAConfig:
    """Exponential moving average of the weights; warmup: decay_t = min(decay, (1 + t) / (10 + t))."""

    decay: float = opt(0.999, ge=0, lt=1)
    warmup: bool = True


@dataclass
class TrainerConfig:
    """Lightning Trainer options; ckpt_path is null, 'last' (out_dir/checkpoints/last.ckpt) or a path.

    keep_last_k: periodic checkpoints kept (the newest k; null keeps all); last.ckpt and the final step's
    checkpoint are always kept, so resuming is unaffected.
    """

    max_steps: int = opt(2500, ge=1)
    accelerator: Accelerator = "auto"
    devices: Devices = 1
    num_nodes: int = opt(1, ge=1)
    strategy: str = "auto"
    precision: Precision = "32-true"
    log_every_n_steps: int = opt(50, ge=1)
    checkpoint_every_n_steps: int = opt(500, ge=1)
    keep_last_k: int | None = opt(3, ge=1)
    ckpt_path: str | None = None
    deterministic: bool = False
    limit_val_batches: Union[int, float] = opt(1, ge=0)


@dataclass
class ModelConfig:
    """Parameterization (null: the process default) and the EDM preconditioning / noise-sampling constants
    (ln sigma ~ N(P_mean, P_std^2) in the EDM loss; Karras et al. 2022, Table 1)."""

    parameterization: str | None = None
    sigma_data: float = opt(0.5, gt=0)
    P_mean: float = -1.2
    P_std: float = opt(1.2, gt=0)


@dataclass
class FinalSamplesConfig:
    """PNG grid drawn with EMA weights after training; n = 0 disables it."""

    sampler: str = "euler_maruyama"
    nfe: int = opt(200, ge=1)
    n: int = opt(64, ge=0)
    options: dict[str, Any] = opt({})


@dataclass
class DataLoaderConfig:
    """Options of the data module itself (the data set's own options sit beside them in ``data``)."""

    batch_size: int = opt(128, ge=1)
    num_workers: int = opt(0, ge=0)
    val_fraction: float = opt(0.05, ge=0, lt=1)
    val_size: int = opt(1024, ge=1)
    hflip: bool = False
    shuffle_seed: int | None = opt(None, ge=0)


LOADER_KEYS = tuple(f.name for f in dataclasses.fields(DataLoaderConfig))  # data keys that are not the data set's


@dataclass
class SampleTrainerConfig:
    """Lightning Trainer options for sample.py (DDP: strategy=ddp with devices > 1 or num_nodes > 1)."""

    accelerator: Accelerator = "auto"
    devices: Devices = 1
    num_nodes: int = opt(1, ge=1)
    strategy: str = "auto"


@dataclass
class FIDConfig:
    """Reference statistics (.npz from ``python -m fastdiff.cli.stats``) and feature-extractor options."""

    ref: str | None = None
    options: dict[str, Any] = opt({})


@dataclass
class SampleConfig:
    """sample.py's arguments (``key=value``); ckpt, sampler, seeds and out are required."""

    ckpt: str
    sampler: str
    seeds: Union[str, int, list[int]]
    out: str
    nfe: int | None = opt(None, ge=1)
    steps: int | None = opt(None, ge=1)
    batch: int = opt(64, ge=1)
    ema: bool = True
    progress: bool = True
    options: dict[str, Any] = opt({})
    trainer: dict[str, Any] = opt({})
    fid: dict[str, Any] = opt({})


def check_devices(path: str, devices: Any) -> None:
    """Lightning's devices: an int >= 1 (or -1: all), 'auto', a non-empty list of device indices, or '0,1'."""
    allowed = "allowed: an integer >= 1, -1 (all), 'auto', a list of device indices like [0, 1], or '0,1'"
    if isinstance(devices, int):
        ok = devices >= 1 or devices == -1
    elif isinstance(devices, list):
        ok = bool(devices) and all(d >= 0 for d in devices) and len(set(devices)) == len(devices)
    else:
        parts = [p.strip() for p in str(devices).split(",") if p.strip()]
        ok = devices == "auto" or devices.strip() == "-1" or (bool(parts) and all(p.isdigit() for p in parts))
    if not ok:
        raise ConfigError(f"{path}: {devices!r} is not a device count or list — {allowed}")
