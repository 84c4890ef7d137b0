"""sample.py throughput with 1 vs 2 processes (Lightning DDP, gloo on CPU or nccl on GPU), side by side in one run.

    python -m benchmarks throughput [--n 512] [--sampler edm_heun] [--nfe 17] [--batch 64] [--repeats 1]
                                           [--accelerator cpu] [--ckpt PATH] [--md OUT.md]

Model: the default digits U-Net of configs/digits_vp.yaml, freshly initialised (throughput does not depend on the
weights) unless --ckpt is given. Each setting runs ``python sample.py`` as a subprocess into its own output folder;
samples/s is the summary's figure (generated samples / the slowest rank's predict-loop time, file writing
included, start-up excluded); the wall time includes interpreter start, Lightning import and DDP set-up.
Settings are interleaved (1 proc, 2 procs, 1 proc, ...) so that background load hits them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def make_checkpoint(path: Path) -> None:
    """A freshly initialised digits/VP U-Net saved in the layout DiffusionModule checkpoints use."""
    from fastdiff.config import load_config
    from fastdiff.lightning.module import DiffusionModule

    cfg = load_config(str(REPO / "configs" / "digits_vp.yaml"), [])
    torch.manual_seed(0)
    module = DiffusionModule(cfg, (1, 8, 8))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)


def run_setting(ckpt: str, out: Path, procs: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """One sample.py run; returns its summary plus the wall time."""
    cmd = [sys.executable, str(REPO / "sample.py"), f"ckpt={ckpt}", f"sampler={args.sampler}", f"nfe={args.nfe}",
           f"seeds=0-{args.n - 1}", f"out={out}", f"batch={args.batch}", "ema=false", "progress=false",
           f"trainer.accelerator={args.accelerator}", f"trainer.devices={procs}"]
    if procs > 1:
        cmd.append("trainer.strategy=ddp")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"sample.py failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {**summary, "wall": wall, "procs": procs, "threads": threads}


def table(rows: list[dict[str, Any]], base: float) -> str:
    lines = ["| processes | threads/process | samples/s (predict loop), median | every round | scaling vs 1 process "
             "| wall s (incl. start-up) |", "|---|---|---|---|---|---|"]
    for r in rows:
        each = ", ".join(f"{v:.2f}" for v in r["rounds"])
        lines.append(f"| {r['procs']} | {r['threads']} | {r['samples_per_s']:.2f} | {each} "
                     f"| {r['samples_per_s'] / base:.2f}x | {r['wall']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="number of seeds (samples) per run")
    ap.add_argument("--sampler", default="edm_heun")
    ap.add_argument("--nfe", type=int, default=17)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of (1 proc, 2 procs, 1 proc x 2 threads)")
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--ckpt", default=None, help="a fastdiff checkpoint (default: a fresh digits U-Net)")
    ap.add_argument("--md", default=None, help="also write the markdown report here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="fastdiff-sample-bench-") as tmp:
        ckpt = args.ckpt or str(Path(tmp) / "digits_unet.ckpt")
        if args.ckpt is None:
            make_checkpoint(Path(ckpt))
        load_before = os.getloadavg()
        settings = [(1, 1), (2, 1), (1, 2)]
        results: dict[tuple[int, int], list[dict[str, Any]]] = {s: [] for s in settings}
        for rep in range(args.repeats):
            for procs, threads in settings:
                out = Path(tmp) / f"p{procs}_t{threads}_r{rep}"
                results[(procs, threads)].append(run_setting(ckpt, out, procs, threads, args))
                print(f"done {procs} proc x {threads} thread(s), round {rep}: "
                      f"{results[(procs, threads)][-1]['samples_per_s']:.2f} samples/s", file=sys.stderr)
        load_after = os.getloadavg()
        ref_files = sorted(p.relative_to(Path(tmp) / "p1_t1_r0") for p in (Path(tmp) / "p1_t1_r0").rglob("*.png"))
        same = all(
            [(Path(tmp) / "p1_t1_r0" / f).read_bytes() for f in ref_files]
            == [(Path(tmp) / f"p{p}_t{t}_r0" / f).read_bytes() for f in ref_files] for p, t in settings)

    rows = []
    for (procs, threads), runs in results.items():  # median over repeats
        ordered = sorted(runs, key=lambda r: r["samples_per_s"])
        rows.append({**ordered[len(ordered) // 2], "rounds": [r["samples_per_s"] for r in runs]})
    base = rows[0]["samples_per_s"]
    cmd = " ".join(["python -m benchmarks throughput"] + sys.argv[1:])
    report = "\n".join([
        f"Command: `{cmd}`",
        "",
        f"Model: digits U-Net (configs/digits_vp.yaml, {'fresh init' if args.ckpt is None else args.ckpt}), "
        f"sampler {args.sampler} nfe={args.nfe}, {args.n} samples, batch {args.batch}, accelerator {args.accelerator}, "
        f"PNG output; median (upper for an even count) of {args.repeats} interleaved round(s).",
        f"Machine: {platform.machine()} {os.cpu_count()} logical CPUs, torch {torch.__version__}; load average "
        f"{load_before[0]:.1f} before / {load_after[0]:.1f} after the run.",
        "",
        table(rows, base),
        "",
        f"Scaling 2 processes / 1 process (1 thread each): {rows[1]['samples_per_s'] / base:.2f}x. "
        f"Files byte-identical across all settings: {same}.",
    ])
    print(report)
    if args.md:
        Path(args.md).write_text(report + "\n")


if __name__ == "__main__":
    main()
