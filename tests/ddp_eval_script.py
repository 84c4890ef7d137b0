"""Helper for tests/test_sampling_callback.py: SamplingEvaluation under 1 or 2 CPU processes (gloo DDP).

Usage: python tests/ddp_eval_script.py OUT_DIR DEVICES. lr = 0 keeps the weights at their (seeded) initial values,
so a 1-process and a 2-process run evaluate the same model on the same seeds and must log the same metrics.
Rank r saves its callback history and failures to OUT_DIR/rank{r}.pt. Lightning's ddp launcher re-runs this file
for rank 1. One sampler is made to fail for seed 7 only (a rank-1 seed) to check that no rank hangs.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import torch

torch.set_num_threads(1)

import lightning.pytorch as pl  # noqa: E402

from fastdiff.lightning.callbacks.ema import EMA  # noqa: E402
from fastdiff.lightning.callbacks.sampling import build_evaluation_callbacks  # noqa: E402
from fastdiff.lightning.module import DiffusionModule  # noqa: E402
from fastdiff.samplers import SamplingNaNError  # noqa: E402

CONFIG: dict[str, Any] = {
    "seed": 0,
    "process": {"name": "vp"},
    "net": {"name": "mlp", "hidden": 32, "depth": 1, "emb_dim": 16},
    "model": {"parameterization": None, "sigma_data": 0.5},
    "optim": {"lr": 0.0, "warmup_steps": 0, "grad_clip": 1.0},
    "data": {"name": "toy2d", "shape": "rings", "n": 512},
}
EVALUATION: list[dict[str, Any]] = [
    {"samplers": [{"sampler": "euler_maruyama", "nfe": [4, 8]},
                  {"sampler": "edm_heun", "nfe": 5},
                  {"sampler": "ggf", "options": [{"eps_rel": 0.5, "eps_abs": 0.5, "max_nfe": 20}]},
                  {"sampler": "euler_maruyama", "nfe": 3, "label": "failing"}],
     "n_samples": 13, "seeds": "0-12", "batch_size": 3, "every_n_steps": 2,
     "metrics": ["raw_fd", "raw_kid", "sliced_w", "mmd"], "ref_samples": 256, "progress": False},
    {"name": "tiny", "samplers": [{"sampler": "euler_maruyama", "nfe": 3}], "n_samples": 1, "seeds": 7,
     "every_n_steps": 2, "metrics": ["sliced_w"], "ref_samples": 64, "progress": False, "log_images": False},
]
FAIL_SEED = 7  # in rank 1's share under 2 ranks (batches of 3: rank 1 gets seeds 3-4, 7-8, 11-12)


class FailOnSeed:
    """Wraps a sampler: raises SamplingNaNError for a batch that contains FAIL_SEED."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sample(self, score_fn: Any, process: Any, shape: Any, seeds: Any = None, **kw: Any) -> Any:
        seeds = list(seeds)
        if FAIL_SEED in seeds:
            raise SamplingNaNError(self.inner.name, [FAIL_SEED])
        return self.inner.sample(score_fn, process, shape, seeds=seeds, **kw)


def toy_loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.DataLoader(torch.randn(64, 2, generator=g), batch_size=16)


def run(out_dir: str, devices: int) -> tuple[Any, list[Any]]:
    """Fit 2 steps (lr 0) with the evaluations attached; returns (trainer, callbacks)."""
    pl.seed_everything(0, verbose=False)
    module = DiffusionModule(CONFIG, (2,))
    callbacks = build_evaluation_callbacks(EVALUATION, (2,), "vector", data=CONFIG["data"])
    for r in callbacks[0].runs:
        if r.label == "failing":
            r.sampler = FailOnSeed(r.sampler)
    return fit_with_callbacks(module, callbacks, toy_loader(), devices, max_steps=2), callbacks


def fit_with_callbacks(module: Any, callbacks: list[Any], loader: Any, devices: int, max_steps: int) -> Any:
    """Fit ``max_steps`` on CPU (DDP over gloo when devices > 1) with an EMA and the given callbacks, no logger,
    checkpoints or validation loop; returns the trainer."""
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=[EMA(decay=0.9), *callbacks], limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def main() -> None:
    out_dir, devices = sys.argv[1], int(sys.argv[2])
    trainer, callbacks = run(out_dir, devices)
    result = {"rank": trainer.global_rank, "world_size": trainer.world_size,
              "history": [cb.history for cb in callbacks], "failures": [cb.failures for cb in callbacks]}
    torch.save(result, os.path.join(out_dir, f"rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
