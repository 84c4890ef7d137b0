"""What standard FID costs in the default job, measured side by side in one run (so the RATIOS are meaningful).

Per 128 digits images (8x8 -> 299x299): Inception pool3 features (``fid``/``kid``), the small classifier's
features (``fd_digits``), and one forward of the default job's U-Net at batch 128 (the unit of sampling cost).
From these it derives the default job's per-evaluation cost: sampling = total NFE of its sampler runs x one
U-Net forward; FID = one Inception pass per run (128 samples each), plus the reference statistics once.

    OMP_NUM_THREADS=1 python benchmarks/fid_cost.py --threads 1 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


CPU_TIMES: dict[str, float] = {}


def median_time(fn: Callable[[], Any], repeats: int, name: str = "") -> float:
    """Median wall time of ``fn``; the median process CPU time goes to CPU_TIMES[name] (less hurt by a busy
    machine than wall time, though shared caches still slow it)."""
    fn()  # warm-up (allocations, one-time kernels)
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    CPU_TIMES[name] = statistics.median(cpu)
    return statistics.median(times)


def default_job() -> dict[str, Any]:
    return yaml.safe_load((REPO / "configs" / "digits_vp.yaml").read_text())


def fixed_nfe(evaluation: dict[str, Any]) -> tuple[int, int, int]:
    """(sum of fixed NFE budgets, number of fixed runs, number of adaptive runs) of one evaluation entry."""
    total, runs, adaptive = 0, 0, 0
    for s in evaluation["samplers"]:
        if "nfe" in s:
            budgets = s["nfe"] if isinstance(s["nfe"], list) else [s["nfe"]]
            total, runs = total + sum(budgets), runs + len(budgets)
        else:
            adaptive += len(s.get("options", [{}]))
    return total, runs, adaptive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from fastdiff.data import Digits
    from fastdiff.lightning.module import DiffusionModule
    from fastdiff.metrics import ClassifierFeatures, InceptionFeatures

    x = Digits(split="train").data[:128]
    cfg = default_job()
    inception = InceptionFeatures(weights=args.weights)
    classifier = ClassifierFeatures("digits")
    module = DiffusionModule(cfg, tuple(x.shape[1:])).eval()
    t = torch.full((128,), 0.5)
    with torch.no_grad():
        t_inc = median_time(lambda: inception(x), args.repeats, "inception")
        t_cls = median_time(lambda: classifier(x), args.repeats, "classifier")
        t_net = median_time(lambda: module.model(x, t), args.repeats, "unet")  # one NFE: network + parameterization
    ev = cfg["evaluation"][0]
    nfe, runs, adaptive = fixed_nfe(ev)
    n = ev.get("n_samples", 128)
    n_ref = min(ev.get("ref_samples", 10000), len(Digits(split="train")))
    print(f"threads={args.threads} repeats={args.repeats} weights={inception.extractor_id}")
    print(f"per 128 images: inception {t_inc:.2f} s | classifier {t_cls * 1e3:.1f} ms | U-Net forward "
          f"{t_net * 1e3:.1f} ms | inception / classifier = {t_inc / t_cls:.0f}x | inception / U-Net = "
          f"{t_inc / t_net:.1f} U-Net forwards")
    sampling = nfe * t_net * n / 128
    fid = (runs + adaptive) * t_inc * n / 128
    print("CPU seconds per 128 images: " + " | ".join(f"{k} {v:.3f}" for k, v in CPU_TIMES.items()))
    print(f"default job, one evaluation: {runs} fixed runs ({nfe} NFE in all) + {adaptive} adaptive run(s), "
          f"{n} samples each")
    print(f"  sampling (fixed runs only, a lower bound) ~ {sampling:.1f} s; adding fid+kid ~ {fid:.1f} s "
          f"(+{100 * fid / sampling:.0f}%); reference statistics once ({n_ref} images) ~ {t_inc * n_ref / 128:.1f} s")


if __name__ == "__main__":
    main()
