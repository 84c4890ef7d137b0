"""The small trained networks of the quality benchmark, trained by ``python -m benchmarks checkpoints`` when absent.

    python -m benchmarks checkpoints [--only toy2d_vp,digits_vp] [--cache DIR] [--digits-steps N] [--force]

Each network is ``train.py`` on one of the repository's configs (1 CPU thread, final samples and evaluation off),
cached as ``<cache>/<name>/checkpoints/last.ckpt`` under the git-ignored ``benchmarks/.cache/`` so anyone can rerun
the benchmark without checkpoint paths of one machine. ``quality --trained`` picks up whatever is cached.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.meta import REPO

CACHE = REPO / "benchmarks" / ".cache" / "ckpts"
NETWORKS: dict[str, str] = {  # name -> config; toy2d: 2-D rings MLP (~2 min), digits: 8x8 U-Net (~15 min / 1 thread)
    "toy2d_vp": "configs/toy2d_vp.yaml", "toy2d_ve": "configs/toy2d_ve.yaml", "toy2d_psld": "configs/toy2d_psld.yaml",
    "digits_vp": "configs/digits_vp.yaml", "digits_ve": "configs/digits_ve.yaml",
    "digits_psld": "configs/digits_psld.yaml"}


def ckpt_path(name: str, cache: Path = CACHE) -> Path:
    return cache / name / "checkpoints" / "last.ckpt"


def cached(cache: Path = CACHE) -> dict[str, Path]:
    """The networks already trained: name -> checkpoint."""
    return {n: ckpt_path(n, cache) for n in NETWORKS if ckpt_path(n, cache).exists()}


def train_command(name: str, cache: Path, steps: int | None) -> list[str]:
    over = [f"out_dir={cache / name}", "final_samples.n=0", "evaluation=[]"]
    if steps is not None:
        over.append(f"trainer.max_steps={steps}")
    return [sys.executable, str(REPO / "train.py"), "--config", str(REPO / NETWORKS[name]), *over]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(NETWORKS)}")
    ap.add_argument("--cache", default=str(CACHE), help="where checkpoints are cached (git-ignored)")
    ap.add_argument("--toy-steps", type=int, default=None, help="training steps of toy2d nets (default: config's)")
    ap.add_argument("--digits-steps", type=int, default=None, help="training steps of digits nets (default: config's)")
    ap.add_argument("--force", action="store_true", help="retrain even when cached")


def main(args: argparse.Namespace) -> int:
    names = list(NETWORKS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in names if n not in NETWORKS]
    if bad:
        print(f"error: unknown network(s) {','.join(bad)} — allowed: {', '.join(NETWORKS)}", file=sys.stderr)
        return 2
    cache = Path(args.cache)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in names:
        path = ckpt_path(name, cache)
        if path.exists() and not args.force:
            print(f"{name}: cached at {path}")
            continue
        steps = args.toy_steps if name.startswith("toy2d") else args.digits_steps
        start = time.perf_counter()
        proc = subprocess.run(train_command(name, cache, steps), cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not path.exists():
            print(f"{name}: training failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        print(f"{name}: trained in {time.perf_counter() - start:.0f} s -> {path}")
    return 0
