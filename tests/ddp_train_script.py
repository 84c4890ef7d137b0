"""Helper for tests/test_training.py: 2-process DDP training on CPU (gloo); each rank saves its weights + EMA.

Usage: python tests/ddp_train_script.py OUT_DIR [STEPS]. Lightning's ddp launcher re-runs this script for rank 1.
"""
from __future__ import annotations

import os
import sys

import torch

torch.set_num_threads(1)

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from fastdiff.lightning.callbacks.ema import EMA  # noqa: E402
from fastdiff.lightning.module import DiffusionModule  # noqa: E402
from fastdiff.losses import diffusion_loss  # noqa: E402

CONFIG = {
    "seed": 0,
    "process": {"name": "vp"},
    "net": {"name": "mlp", "hidden": 64, "depth": 2, "emb_dim": 32},
    "model": {"parameterization": None, "sigma_data": 0.5},
    "optim": {"lr": 3e-3, "warmup_steps": 5, "grad_clip": 1.0},
}


def toy_data(n: int = 1024) -> torch.Tensor:
    """Four Gaussian blobs in 2-D (the same tensor on every rank)."""
    g = torch.Generator().manual_seed(123)
    centers = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    return centers[torch.randint(0, 4, (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)


def eval_loss(module: DiffusionModule, data: torch.Tensor) -> float:
    """Diffusion loss on the whole data set with fixed noise (comparable before and after training)."""
    with torch.no_grad():
        return diffusion_loss(module.model, data, torch.Generator().manual_seed(99)).item()


class FirstLoss(Callback):
    """Keeps this rank's first training loss (ranks see different data shards and noise)."""

    def __init__(self) -> None:
        self.first: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if self.first is None:
            self.first = float(outputs["loss"])


def main() -> None:
    out_dir = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    pl.seed_everything(0, verbose=False)
    data = toy_data()
    module = DiffusionModule(CONFIG, (2,))
    before = eval_loss(module, data)
    ema, first = EMA(decay=0.9), FirstLoss()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=steps, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[ema, first], gradient_clip_val=1.0, limit_val_batches=0, num_sanity_val_steps=0)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
    trainer.fit(module, train_dataloaders=loader)
    rank = trainer.global_rank
    result = {
        "rank": rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "params": {n: p.detach().clone() for n, p in module.named_parameters()},
        "ema": {n: v.detach().clone() for n, v in ema.shadow.items()},
        "ema_updates": ema.num_updates,
        "first_loss": first.first,
        "loss_before": before,
        "loss_after": eval_loss(module, data),
    }
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main()
