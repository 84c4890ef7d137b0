"""``python train.py [--config FILE] [key=value ...]``: train a diffusion model with Lightning, then draw a sample grid."""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fastdiff.cli import run_cli, split_cli_args
from fastdiff.config import ConfigError, config_to_yaml, load_config

USAGE = ("usage: python train.py [--config FILE] [--verbose] [--debug] [key=value ...]   "
         "(e.g. optim.lr=1e-3 trainer.max_steps=500); bad input: one error line, exit 2 (FASTDIFF_DEBUG=1 or --debug "
         "shows the traceback)")


@dataclass
class TrainResult:
    """What a training run produced."""

    steps: int
    final_loss: float
    checkpoint: str
    samples: str | None
    out_dir: str
    is_global_zero: bool = True
    already_finished: bool = False  # resumed from a checkpoint at or beyond max_steps: nothing was run


# ---- sample grids -------------------------------------------------------------------------------------------
def save_samples_png(x: Tensor, path: str | os.PathLike[str], title: str = "") -> None:
    """Images [N, C, H, W] in [-1, 1]: a tiled grid; 2-D points [N, 2]: a matplotlib scatter plot."""
    if x.ndim == 4:
        from PIL import Image

        from fastdiff.utils.images import image_grid

        upscale = max(1, 64 // max(x.shape[-2:]))  # make tiny images (8x8 digits) visible
        Image.fromarray(image_grid(x, upscale=upscale, pad=max(2, upscale)).numpy()).save(path)
    elif x.ndim == 2 and x.shape[1] == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        pts = x.detach().float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    else:
        raise ValueError(f"cannot plot samples of shape {tuple(x.shape)}; expected [N, C, H, W] images or [N, 2] points")


def draw_final_samples(module: Any, ema: Any, cfg: dict[str, Any], data_shape: tuple[int, ...],
                       device: torch.device, chunk: int = 256) -> Tensor:
    """``final_samples.n`` samples (seeds 0..n-1) from the EMA weights with the configured sampler."""
    from fastdiff.samplers import get_sampler

    fs = cfg["final_samples"]
    sampler = get_sampler(fs["sampler"], nfe=fs["nfe"], **fs["options"])
    module.to(device)
    was_training = module.training
    module.eval()
    chunks = []
    try:
        with ema.averaged(module):
            for start in range(0, fs["n"], chunk):  # per-seed noise: chunking does not change the samples
                seeds = range(start, min(start + chunk, fs["n"]))
                out = sampler.sample(module.model, module.model.process, (len(seeds), *data_shape), seeds=seeds,
                                     device=device)
                chunks.append(out.x.cpu())
    finally:
        module.train(was_training)
    return torch.cat(chunks)


# ---- training -----------------------------------------------------------------------------------------------
def resolve_ckpt_path(cfg: dict[str, Any]) -> str | None:
    """``trainer.ckpt_path``: null (fresh), 'last' (out_dir/checkpoints/last.ckpt, must exist) or a file path."""
    ckpt = cfg["trainer"]["ckpt_path"]
    if ckpt is None:
        return None
    path = Path(cfg["out_dir"]) / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.is_file():
        raise ConfigError(f"trainer.ckpt_path: no checkpoint to resume from at {path} — give an existing .ckpt file, "
                          "'last' after a run has saved one, or null")
    return str(path)


def preflight(cfg: dict[str, Any]) -> tuple[Any, tuple[int, ...], str | None]:
    """Every check that needs the disk, the hardware, the data or the checkpoint, before anything is written:
    (data module with its data sets built, data shape, checkpoint path to resume or None)."""
    from fastdiff.data import DiffusionDataModule
    from fastdiff.schema.preflight import check_data, check_hardware, check_resume_identity, check_writable_dir

    check_writable_dir("out_dir", cfg["out_dir"])
    check_hardware("trainer", cfg["trainer"])
    ckpt_path = resolve_ckpt_path(cfg)
    datamodule = DiffusionDataModule(**cfg["data"])
    data_shape = check_data(datamodule, cfg["trainer"])
    if ckpt_path is not None:
        check_resume_identity(ckpt_path, cfg, data_shape)
    return datamodule, data_shape, ckpt_path


def run_name(out_dir: str | os.PathLike[str]) -> str:
    """The TensorBoard run name: the last component of out_dir (``runs/digits_vp`` -> ``digits_vp``)."""
    return Path(os.path.abspath(out_dir)).name or "run"


def build_trainer(cfg: dict[str, Any], callbacks: list[Any], progress: bool = True, verbose: bool = False) -> Any:
    """Lightning Trainer: TensorBoard logs (``out_dir/<run name>``) and periodic + last checkpoints under out_dir,
    the given callbacks (the evaluation callbacks find the EMA wherever it is listed), one step progress bar, the
    CPU thread policy, clipping, precision, devices and strategy."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from fastdiff.lightning.callbacks.progress import StepProgressBar
    from fastdiff.lightning.callbacks.threads import ThreadPolicy

    tc, out_dir = cfg["trainer"], Path(cfg["out_dir"])
    # keep_last_k: the newest k periodic checkpoints (ranked by step); last.ckpt is always written, so resume holds
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="{step}", save_top_k=tc["keep_last_k"] or -1,
                                 monitor="step", mode="max", save_last=True,
                                 every_n_train_steps=tc["checkpoint_every_n_steps"], auto_insert_metric_name=True)
    logger = TensorBoardLogger(save_dir=str(out_dir), name=run_name(out_dir), version="", default_hp_metric=False)
    extra = [ThreadPolicy(), *([StepProgressBar()] if progress else [])]
    clip = cfg["optim"]["grad_clip"]
    return Trainer(
        max_steps=tc["max_steps"], accelerator=tc["accelerator"], devices=tc["devices"], num_nodes=tc["num_nodes"],
        strategy=tc["strategy"], precision=tc["precision"], log_every_n_steps=tc["log_every_n_steps"],
        deterministic=tc["deterministic"], limit_val_batches=tc["limit_val_batches"],
        check_val_every_n_epoch=None, val_check_interval=min(tc["checkpoint_every_n_steps"], tc["max_steps"]),
        gradient_clip_val=clip if clip else None, gradient_clip_algorithm="norm",
        callbacks=[*callbacks, checkpoint, *extra], logger=logger, enable_progress_bar=progress,
        default_root_dir=str(out_dir), num_sanity_val_steps=0, enable_model_summary=verbose,
    )


def _final_loss(trainer: Any) -> float:
    loss = trainer.callback_metrics.get("train/loss")
    return float(loss) if loss is not None else float("nan")


def checkpoint_step(path: str) -> int:
    """The optimizer step a Lightning checkpoint was saved at (read without executing code)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("global_step", 0))


def train(cfg: dict[str, Any], progress: bool = True, verbose: bool = False) -> TrainResult:
    """Run one validated config: fit, final + last checkpoints, then the EMA sample grid (rank 0 writes files)."""
    from lightning.pytorch import seed_everything

    from fastdiff.lightning.callbacks.ema import EMA
    from fastdiff.lightning.module import DiffusionModule

    datamodule, data_shape, ckpt_path = preflight(cfg)
    out_dir = Path(cfg["out_dir"])
    if ckpt_path is not None:
        done = checkpoint_step(ckpt_path)
        if done >= cfg["trainer"]["max_steps"]:  # nothing to run: say so instead of fitting zero steps
            return TrainResult(steps=done, final_loss=float("nan"), checkpoint=ckpt_path, samples=None,
                               out_dir=str(out_dir), already_finished=True)
    seed_everything(cfg["seed"], workers=True, verbose=False)
    module = DiffusionModule(cfg, data_shape)
    ema = EMA(decay=cfg["ema"]["decay"], warmup=cfg["ema"]["warmup"])
    evaluations = []
    if cfg["evaluation"]:  # validated here, before any training (errors name evaluation[i].key)
        from fastdiff.lightning.callbacks.sampling import build_evaluation_callbacks

        evaluations = build_evaluation_callbacks(cfg["evaluation"], data_shape, datamodule.kind, data=cfg["data"])
    try:
        trainer = build_trainer(cfg, [ema, *evaluations], progress=progress, verbose=verbose)
    except Exception as err:  # noqa: BLE001 - Lightning rejects trainer options with several exception types
        raise ConfigError(f"trainer: {(str(err).strip().splitlines() or [type(err).__name__])[0]}") from None
    created = not out_dir.exists()
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(config_to_yaml(cfg))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except BaseException:
        # a run that fails to start (no optimizer step, no checkpoint) leaves no directory it created behind
        if created and trainer.is_global_zero and trainer.global_step == 0 and not (out_dir / "checkpoints").exists():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise

    step = trainer.global_step
    ckpt_dir = out_dir / "checkpoints"
    final = ckpt_dir / f"step={step}.ckpt"
    # the same decision on every rank (save_checkpoint synchronises; rank 0 writes); periodic saves hit step % n == 0
    if step % cfg["trainer"]["checkpoint_every_n_steps"] != 0:
        trainer.save_checkpoint(final, weights_only=False)
    trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)
    samples_path = None
    if cfg["final_samples"]["n"] > 0:  # every rank samples (no collectives), rank 0 writes
        x = draw_final_samples(module, ema, cfg, data_shape, trainer.strategy.root_device)
        if trainer.is_global_zero:
            fs = cfg["final_samples"]
            samples_path = str(out_dir / "samples.png")
            save_samples_png(x, samples_path, title=f"{cfg['process']['name']} {fs['sampler']} nfe={fs['nfe']} "
                                                    f"step={step} (EMA)")
    return TrainResult(steps=step, final_loss=_final_loss(trainer), checkpoint=str(final), samples=samples_path,
                       out_dir=str(out_dir), is_global_zero=trainer.is_global_zero)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python train.py``; returns the process exit code (2 for configuration errors)."""
    return run_cli(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    from fastdiff.cli.console import pop_verbose, start_job

    verbose, argv = pop_verbose(argv)
    path, overrides = split_cli_args(argv)
    cfg = load_config(path, overrides)
    start_job(verbose)
    result = train(cfg, verbose=verbose)
    if result.already_finished:
        print(f"finished: {result.out_dir} already holds step {result.steps} (trainer.max_steps="
              f"{cfg['trainer']['max_steps']}); nothing to do. Raise trainer.max_steps to train on "
              f"({result.checkpoint}).")
        return 0
    if result.is_global_zero:
        print(f"done: steps={result.steps} final_loss={result.final_loss:.4f} checkpoint={result.checkpoint} "
              f"samples={result.samples or '(none)'}")
    return 0
