"""Training step time: Lightning (as train.py sets it up, minus checkpoints) vs a bare PyTorch loop, same net/batch.

Both loops do the same work per step: the diffusion loss of the config's model on one batch, backward, gradient
clipping, Adam + the warm-up schedule, and the EMA update. Lightning adds its loop, hooks, ``self.log`` and a
TensorBoard logger (every ``log_every_n_steps``). Step time = time between consecutive step ends (data loading
included), median over the steps after a warm-up; the two loops alternate over rounds in one process.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from fastdiff.lightning.module import step_seed
from fastdiff.losses import diffusion_loss


def _loader(data: torch.Tensor, batch: int) -> DataLoader:
    return DataLoader(TensorDataset(data), batch_size=batch, shuffle=False, drop_last=True)


def lightning_step_times(cfg: dict[str, Any], shape: tuple[int, ...], data: torch.Tensor, batch: int,
                         steps: int) -> list[float]:
    """Per-step seconds of ``steps`` Lightning training steps (fresh module and Trainer)."""
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    from fastdiff.lightning.callbacks.ema import EMA
    from fastdiff.lightning.module import DiffusionModule

    class StepClock(Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    torch.manual_seed(cfg["seed"])
    module = DiffusionModule(cfg, shape)
    clock = StepClock()
    clip = cfg["optim"]["grad_clip"]
    with tempfile.TemporaryDirectory(prefix="fastdiff-train-speed-") as tmp:
        trainer = Trainer(max_steps=steps, accelerator="cpu", devices=1, precision=cfg["trainer"]["precision"],
                          logger=TensorBoardLogger(tmp, name="tb", version=""),
                          log_every_n_steps=cfg["trainer"]["log_every_n_steps"], enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                          limit_val_batches=0, gradient_clip_val=clip if clip else None,
                          gradient_clip_algorithm="norm",
                          callbacks=[EMA(decay=cfg["ema"]["decay"], warmup=cfg["ema"]["warmup"]), clock])
        trainer.fit(module, train_dataloaders=_loader(data, batch))
    return [b - a for a, b in zip(clock.ends, clock.ends[1:])]


def bare_step_times(cfg: dict[str, Any], shape: tuple[int, ...], data: torch.Tensor, batch: int,
                    steps: int) -> list[float]:
    """Per-step seconds of the same work in a plain PyTorch loop."""
    from fastdiff.lightning.module import DiffusionModule

    torch.manual_seed(cfg["seed"])
    module = DiffusionModule(cfg, shape)  # only to build the same model and optimizer
    model = module.model.train()
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    params = [p for p in module.parameters() if p.requires_grad]
    shadow = [p.detach().clone() for p in params]
    decay, warmup, clip = float(cfg["ema"]["decay"]), bool(cfg["ema"]["warmup"]), cfg["optim"]["grad_clip"]
    ends: list[float] = []
    step = 0
    for (x0,) in _loader(data, batch):
        if step >= steps:
            break
        g = torch.Generator().manual_seed(step_seed(int(cfg["seed"]), step, 0, 0))
        loss = diffusion_loss(model, x0, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay
            torch._foreach_lerp_(shadow, [p.detach() for p in params], 1.0 - d)
        step += 1
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends, ends[1:])]


def compare_training(cfg: dict[str, Any], shape: tuple[int, ...], batch: int, steps: int, rounds: int,
                     warmup: int = 5) -> dict[str, Any]:
    """Median step time of each loop over ``rounds`` alternating rounds, and the Lightning / bare ratio."""
    data = torch.randn(batch * (steps + 1), *shape, generator=torch.Generator().manual_seed(0))
    light, bare, ratios = [], [], []
    for _ in range(rounds):
        lt = statistics.median(lightning_step_times(cfg, shape, data, batch, steps)[warmup:])
        bt = statistics.median(bare_step_times(cfg, shape, data, batch, steps)[warmup:])
        light.append(lt)
        bare.append(bt)
        ratios.append(lt / bt)
    return {"lightning_ms": [1e3 * v for v in light], "bare_ms": [1e3 * v for v in bare], "ratios": ratios,
            "ratio": statistics.median(ratios), "batch": batch, "steps": steps, "rounds": rounds}
