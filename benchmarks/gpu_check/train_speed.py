"""Training throughput: our Lightning module (as train.py runs it) vs a bare PyTorch loop doing the same work.

Both loops train the same ``DiffusionModule`` (same init, same Adam + warm-up, same per-step noise and dropout
seeds, gradient clipping, the EMA callback's update) on the same pre-made, pinned synthetic CIFAR-shaped batches,
with bf16 autocast around the loss only (what Lightning's ``bf16-mixed`` does). images/s counts the steps after
the warm-up (torch.compile compiles in the first step), synchronised at both ends; peak memory is
``torch.cuda.max_memory_allocated`` over the run less what was allocated when it started. Because both loops
compute the same losses from the same inputs, the step-0 loss of the two must agree: a check that the bare loop
really is the same work.
"""
from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmarks.gpu_check.settings import Sizes

N_DISTINCT = 8  # distinct synthetic batches, cycled (data content does not change the cost)


@dataclass
class TrainRun:
    """One timed training run."""

    config: str
    channels_last: bool
    compiled: bool
    loop: str  # "lightning" or "bare"
    images_per_s: float
    peak_mib: float
    first_loss: float
    seconds: float

    @property
    def variant(self) -> str:
        parts = (["channels_last"] if self.channels_last else []) + (["compile"] if self.compiled else [])
        return "+".join(parts) or "eager"


class CyclicBatches(torch.utils.data.Dataset):
    """Item i is the pre-made batch i mod N (a DataLoader with batch_size=None serves them as they are)."""

    def __init__(self, batches: list[Tensor], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tensor:
        return self.batches[i % len(self.batches)]


def synthetic_batches(shape: tuple[int, ...], batch: int, channels_last: bool, pin: bool) -> list[Tensor]:
    """N_DISTINCT batches of uint8-quantised images in [-1, 1], like CIFAR after loading."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(N_DISTINCT):
        x = torch.randint(0, 256, (batch, *shape), generator=g, dtype=torch.uint8).float() / 127.5 - 1.0
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        out.append(x.pin_memory() if pin else x)
    return out


def build_module(cfg: dict[str, Any], shape: tuple[int, ...], channels_last: bool, compiled: bool) -> Any:
    """The DiffusionModule of ``cfg`` with seeded init, in channels_last and/or with its network compiled."""
    from fastdiff.lightning.module import DiffusionModule

    torch.manual_seed(int(cfg["seed"]))
    module = DiffusionModule(cfg, shape)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if compiled:  # the U-Net only: the process math around it runs in float64 on per-sample times
        module.model.net = torch.compile(module.model.net)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> int:
    """Free what earlier runs left and restart the peak counter; returns the bytes still allocated (a baseline:
    torch.compile's caches may keep an earlier run's module alive)."""
    gc.collect()
    torch._dynamo.reset()  # fresh compile caches: no recompile limit across runs (Inductor's disk cache remains)
    if device.type != "cuda":
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak_mib(device: torch.device, base: int) -> float:
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else float("nan")


def lightning_run(cfg: dict[str, Any], shape: tuple[int, ...], sz: Sizes, channels_last: bool,
                  compiled: bool) -> tuple[TrainRun, Any]:
    """Fit the module with a Trainer set up like train.py's (TensorBoard logger, EMA, clipping, bf16-mixed), minus
    checkpoints and the progress bar."""
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    from fastdiff.lightning.callbacks.ema import EMA

    device = torch.device(sz.device)
    base = _reset_memory(device)
    module = build_module(cfg, shape, channels_last, compiled)
    data = CyclicBatches(synthetic_batches(shape, sz.train_batch, channels_last, device.type == "cuda"),
                         sz.train_steps)
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=0)

    class Clock(Callback):
        def __init__(self) -> None:
            self.t0 = self.t1 = 0.0
            self.first: Tensor | None = None

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 0:
                self.first = outputs["loss"].detach()
            if batch_idx == sz.train_warmup - 1:
                _sync(device)
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            _sync(device)
            self.t1 = time.perf_counter()

    clock, clip = Clock(), cfg["optim"]["grad_clip"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fastdiff-gpu-check-") as tmp:
        trainer = Trainer(
            max_steps=sz.train_steps, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
            precision="bf16-mixed", logger=TensorBoardLogger(tmp, name="tb", version="", default_hp_metric=False),
            log_every_n_steps=cfg["trainer"]["log_every_n_steps"], enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
            gradient_clip_val=clip if clip else None, gradient_clip_algorithm="norm", default_root_dir=tmp,
            callbacks=[EMA(decay=cfg["ema"]["decay"], warmup=cfg["ema"]["warmup"]), clock])
        trainer.fit(module, train_dataloaders=loader)
    timed = sz.train_steps - sz.train_warmup
    run = TrainRun(cfg["process"]["name"], channels_last, compiled, "lightning",
                   timed * sz.train_batch / (clock.t1 - clock.t0), _peak_mib(device, base), float(clock.first),
                   time.perf_counter() - start)
    return run, module


def bare_run(cfg: dict[str, Any], shape: tuple[int, ...], sz: Sizes, channels_last: bool,
             compiled: bool) -> tuple[TrainRun, Any]:
    """The same work as :func:`lightning_run` in a plain loop (the module is used only as the model container)."""
    from fastdiff.lightning.callbacks.ema import EMA
    from fastdiff.lightning.module import GLOBAL_STREAM, step_seed
    from fastdiff.losses import diffusion_loss

    device = torch.device(sz.device)
    base = _reset_memory(device)
    module = build_module(cfg, shape, channels_last, compiled).to(device).train()
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    params = [p for p in module.parameters() if p.requires_grad]
    ema = EMA(decay=cfg["ema"]["decay"], warmup=cfg["ema"]["warmup"])
    ema.shadow = {n: p.detach().to(torch.float32).clone() for n, p in module.named_parameters()}
    clip, seed = cfg["optim"]["grad_clip"], module.seed
    data = CyclicBatches(synthetic_batches(shape, sz.train_batch, channels_last, device.type == "cuda"),
                         sz.train_steps)
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=0)
    first: Tensor | None = None
    t0 = 0.0
    start = time.perf_counter()
    for step, batch in enumerate(loader):
        x0 = batch.to(device, non_blocking=True)
        torch.manual_seed(step_seed(seed, step, 0, GLOBAL_STREAM))  # dropout, as training_step seeds it
        gen = torch.Generator(device=device).manual_seed(step_seed(seed, step, 0, 0))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = diffusion_loss(module.model, x0, gen, P_mean=module.P_mean, P_std=module.P_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        ema.update(module)
        if step == 0:
            first = loss.detach()
        if step == sz.train_warmup - 1:
            _sync(device)
            t0 = time.perf_counter()
    _sync(device)
    t1 = time.perf_counter()
    timed = sz.train_steps - sz.train_warmup
    run = TrainRun(cfg["process"]["name"], channels_last, compiled, "bare", timed * sz.train_batch / (t1 - t0),
                   _peak_mib(device, base), float(first), time.perf_counter() - start)
    return run, module


def train_section(cfgs: dict[str, dict[str, Any]], shape: tuple[int, ...], sz: Sizes,
                  log: Any = print) -> tuple[list[TrainRun], dict[str, dict[str, Tensor]]]:
    """Every (config, variant) with both loops; returns the runs and, per config, the weights of its eager bare
    run (the sampling section samples with them)."""
    runs: list[TrainRun] = []
    weights: dict[str, dict[str, Tensor]] = {}
    for name, cfg in cfgs.items():
        for channels_last, compiled in sz.variants[name]:
            for fn in (lightning_run, bare_run):
                run, module = fn(cfg, shape, sz, channels_last, compiled)
                runs.append(run)
                log(f"  train {name:5s} {run.variant:22s} {run.loop:9s} {run.images_per_s:9.1f} img/s  "
                    f"peak {run.peak_mib:8.0f} MiB  ({run.seconds:.1f} s)")
                if fn is bare_run and not channels_last and not compiled:
                    weights[name] = {k: v.detach().float().cpu().clone() for k, v in module.model.state_dict().items()}
                del module
    return runs, weights
