"""What the fixed compute micro-batch (sampler option ``compute_batch``, default 64) costs.

Two measurements, side by side in one run:
- wall time of edm_heun (NFE 19) on the default digits U-Net (freshly initialised: a fixed-step sampler's cost
  does not depend on the weights) at several batch sizes, compute_batch 64 vs 0 (one network call per batch),
  rounds interleaved so that machine load hits both alike; the ratio is what to read;
- for the adaptive ggf, whose batched calls shrink to the still-active samples, the network rows evaluated with
  padding over the rows actually needed (a count, independent of machine load), on the exact score of the 64-d
  Gaussian-mixture oracle under VP.

python benchmarks/compute_batch_cost.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class Rows:
    def __init__(self, fn) -> None:
        self.fn, self.rows = fn, 0

    def __call__(self, z, t):
        self.rows += z.shape[0]
        return self.fn(z, t)


def unet_timing(batches: list[int], rounds: int) -> list[str]:
    from fastdiff.config import load_config
    from fastdiff.lightning.module import DiffusionModule
    from fastdiff.samplers import get_sampler

    cfg = load_config(str(REPO / "configs" / "digits_vp.yaml"), [])
    model = DiffusionModule(cfg, (1, 8, 8)).model.eval()
    lines = ["| batch | compute_batch 64 (s) | whole batch (s) | ratio |", "|---|---|---|---|"]
    for b in batches:
        times: dict[int, list[float]] = {64: [], 0: []}
        for _ in range(rounds):
            for cb in (64, 0):
                start = time.perf_counter()
                get_sampler("edm_heun", nfe=19, compute_batch=cb).sample(model, model.process, (b, 1, 8, 8),
                                                                         seeds=range(b))
                times[cb].append(time.perf_counter() - start)
        a, w = sorted(times[64])[rounds // 2], sorted(times[0])[rounds // 2]
        lines.append(f"| {b} | {a:.3f} | {w:.3f} | {a / w:.3f} |")
    return lines


def ggf_rows(n: int) -> list[str]:
    from fastdiff.oracle import GaussianMixture
    from fastdiff.processes import VP
    from fastdiff.samplers import get_sampler

    mix, p = GaussianMixture.random(8, 64, seed=0), VP()
    lines = ["| eps_rel | rows needed | rows with compute_batch 64 | ratio |", "|---|---|---|---|"]
    for eps_rel in (0.1, 0.05):
        counts = []
        for cb in (0, 64):
            fn = Rows(mix.score_fn(p))
            get_sampler("ggf", eps_rel=eps_rel, compute_batch=cb).sample(fn, p, (n, 64), seeds=range(n))
            counts.append(fn.rows)
        lines.append(f"| {eps_rel} | {counts[0]} | {counts[1]} | {counts[1] / counts[0]:.3f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "compute_batch.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    text = ["# Cost of the fixed compute micro-batch", "",
            f"`python benchmarks/compute_batch_cost.py --rounds {args.rounds}` (1 torch thread, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; median of the interleaved rounds).", "",
            "edm_heun NFE 19, digits U-Net:", "", *unet_timing([8, 64, 100, 128], args.rounds), "",
            "ggf on the 64-d mixture oracle (VP, 128 samples): network rows evaluated", "", *ggf_rows(128), ""]
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
