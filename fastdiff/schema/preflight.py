"""Checks that need the file system, the hardware, the data or a checkpoint, run before any work starts (and
before anything is written), each ending as a one-line ConfigError naming the key."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .types import ConfigError


def check_writable_dir(key: str, path: str | os.PathLike[str]) -> Path:
    """``path`` is a directory we can write, or can be created in one; nothing is created here."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{key}: {p} exists and is not a directory — give a directory path")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: cannot write to {p} ({probe} is a file) — give a directory path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write to {p} ({probe} is not writable) — give a writable directory")
    return p


def world_size(trainer: dict[str, Any]) -> int:
    """Processes the Trainer will start, when the config says (int or list devices); 1 for 'auto'/-1."""
    devices = trainer["devices"]
    if isinstance(devices, list):
        n = len(devices)
    elif isinstance(devices, int) and devices > 0:
        n = devices
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        n = 1
    return n * int(trainer.get("num_nodes", 1))


def check_hardware(key: str, trainer: dict[str, Any]) -> None:
    """The accelerator exists here, GPU indices exist, and the precision runs on it (Lightning's rules)."""
    import torch

    acc, precision = trainer["accelerator"], str(trainer.get("precision", "32-true"))
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if acc in ("gpu", "cuda") and n_gpu == 0:
        raise ConfigError(f"{key}.accelerator: {acc!r} but no CUDA GPU is visible here — use cpu or auto")
    if acc == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{key}.accelerator: 'mps' but MPS is not available here — use cpu or auto")
    on_gpu = acc in ("gpu", "cuda") or (acc == "auto" and n_gpu > 0)
    devices = trainer["devices"]
    if on_gpu and isinstance(devices, int) and devices > n_gpu:
        raise ConfigError(f"{key}.devices: {devices} GPUs requested, {n_gpu} visible — at most {n_gpu}")
    if on_gpu and isinstance(devices, list) and any(d >= n_gpu for d in devices):
        raise ConfigError(f"{key}.devices: {devices} names a GPU index >= {n_gpu} — visible GPUs: 0..{n_gpu - 1}")
    if acc == "cpu" or (acc == "auto" and n_gpu == 0):
        if precision in ("16", "16-mixed"):
            raise ConfigError(f"{key}.precision: {trainer['precision']!r} needs a GPU — on CPU use 32-true, "
                              "bf16-mixed or 64-true")


def check_images(key: str, dataset: Any) -> None:
    """Every file of an image folder opens as an image (found now, not mid-epoch)."""
    files = getattr(dataset, "files", None)
    if not files:
        return
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as im:
                im.verify()  # header + integrity (PNG CRCs) without decoding every pixel
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds for broken files
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"{key}: {path} is not a readable image ({first}) — fix or remove it") from None


def check_data(datamodule: Any, trainer: dict[str, Any]) -> tuple[int, ...]:
    """Build the data sets now (missing/empty folders, bad options), check images and that one rank's share
    holds a full batch; returns the data shape."""
    try:
        shape = tuple(datamodule.data_shape)
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as err:
        first = (str(err).strip().strip("'\"").splitlines() or [type(err).__name__])[0]
        key = first.split(":", 1)[0]
        raise ConfigError(f"data.{first}" if key.isidentifier() else f"data: {first}") from None
    check_images("data.root", datamodule._base_train)
    world = world_size(trainer)
    n = len(datamodule.train_dataset)
    per_rank = math.ceil(n / max(world, 1))
    if per_rank < datamodule.batch_size:
        raise ConfigError(f"data.batch_size: {datamodule.batch_size} is larger than the {per_rank} training items "
                          f"per rank ({n} items over {world} rank(s)) — use at most {per_rank}")
    return shape


IDENTITY_SECTIONS = ("process", "net")


def check_resume_identity(path: str, config: dict[str, Any], data_shape: tuple[int, ...]) -> None:
    """The checkpoint to resume was trained with this process, net, parameterization and data shape."""
    from fastdiff.lightning.checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except (OSError, CheckpointError) as err:
        raise ConfigError(f"trainer.ckpt_path: {(str(err).strip().splitlines() or [''])[0]}") from None
    hp, old = ckpt["hyper_parameters"], ckpt["hyper_parameters"]["config"]
    advice = "resume with the config it was trained with, or start a new out_dir"
    if [int(s) for s in hp["data_shape"]] != list(data_shape):
        raise ConfigError(f"trainer.ckpt_path: {path} was trained on data of shape {list(hp['data_shape'])}, the "
                          f"config gives {list(data_shape)} — {advice}")
    for section in IDENTITY_SECTIONS:
        before, now = old.get(section) or {}, config[section]
        for k in sorted(set(before) & set(now)):  # options added to a constructor since then are not a change
            if before[k] != now[k]:
                raise ConfigError(f"trainer.ckpt_path: {path} was trained with {section}.{k}={before[k]!r}, "
                                  f"the config has {now[k]!r} — {advice}")
    par_old = (old.get("model") or {}).get("parameterization")
    if par_old != config["model"]["parameterization"]:
        raise ConfigError(f"trainer.ckpt_path: {path} was trained with model.parameterization={par_old!r}, the "
                          f"config has {config['model']['parameterization']!r} — {advice}")
    _check_weights(path, ckpt["state_dict"], config, data_shape)


def _check_weights(path: str, state: dict[str, Any], config: dict[str, Any], data_shape: tuple[int, ...]) -> None:
    """The stored weights fit the model this config builds (same names and shapes), so Lightning's restore
    cannot fail half-way."""
    from fastdiff.lightning.checkpoint import MODEL_PREFIX
    from fastdiff.model import build_score_model

    expected = {MODEL_PREFIX + k: tuple(v.shape) for k, v in build_score_model(config, data_shape).state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    for key in sorted(set(expected) | set(stored)):
        if expected.get(key) != stored.get(key):
            there = "missing" if key not in stored else f"shape {list(stored[key])}"
            here = "no such weight" if key not in expected else f"shape {list(expected[key])}"
            raise ConfigError(f"trainer.ckpt_path: {path} holds weights of another architecture ({key}: {there} "
                              f"there, {here} in the model of this config) — resume with the config it was "
                              "trained with, or start a new out_dir")
