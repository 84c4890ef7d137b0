"""``python -m benchmarks.gpu_check [--smoke] [--out FILE.md] [--steps N] [--warmup N] [--full-grid] [--debug]``

One command that proves the training and sampling paths on CUDA and measures their speed (issue 17):
training throughput of cifar10_vp / cifar10_psld (Lightning vs bare loop, bf16-mixed, +-channels_last,
+-torch.compile, peak memory), strategy=ddp devices=1 through the training CLI (exact resume, sampling callback,
final samples), and sampling at batch 512 (samples/s, per-seed noise cost, batch-size invariance). Prints one
summary table and writes it, with the device and versions, to benchmarks/results/gpu.md (``--smoke``: a temporary
file). Exit status: 0 all correctness checks passed (speed goals are reported as met/missed), 1 a check failed,
2 bad arguments or no CUDA device without ``--smoke``.

``--smoke``: tiny network and sizes on the CPU (< 60 s), every code path that does not need CUDA: torch.compile
is skipped, DDP uses gloo. CI runs it (tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check.settings import CONFIGS, RESULTS, sizes


class UsageError(ValueError):
    """Bad command-line input (exit status 2)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=" ".join(__doc__.split("\n\n")[1].split()))
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every path that does not need CUDA")
    ap.add_argument("--out", default=None, help=f"markdown report (default: {RESULTS.relative_to(RESULTS.parents[2])}; "
                                                "--smoke: a temporary file)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (default 150; smoke 5)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps per run (default 25; smoke 2)")
    ap.add_argument("--full-grid", action="store_true",
                    help="PSLD runs the whole channels_last x compile grid too (default: VP only; two more compiles)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")

    def fail(message: str) -> None:
        raise UsageError(f"{message} — see python -m benchmarks.gpu_check --help")

    ap.error = fail  # type: ignore[method-assign]  # one line and exit 2, from main
    args = ap.parse_args(argv)
    steps = args.steps if args.steps is not None else sizes(args.smoke).train_steps
    warmup = args.warmup if args.warmup is not None else sizes(args.smoke).train_warmup
    if warmup < 1 or steps <= warmup:
        raise UsageError(f"--steps {steps} and --warmup {warmup}: need warmup >= 1 and steps > warmup — "
                         "e.g. --steps 200 --warmup 30")
    if args.out is not None and not args.out.endswith(".md"):
        raise UsageError(f"--out {args.out}: the report is markdown — give a path ending in .md")
    if args.smoke and args.out is not None and Path(args.out).resolve() == RESULTS.resolve():
        raise UsageError(f"--out {args.out}: the smoke run must not overwrite the committed results — "
                         "give another path or leave --out out")
    return args


def run(args: argparse.Namespace, argv: list[str], log: Any = print) -> int:
    """All three sections, the report, and the exit status."""
    import torch

    from benchmarks.gpu_check import report
    from benchmarks.gpu_check.ddp_resume import finish_ddp, start_ddp
    from benchmarks.gpu_check.sampling import sampling_section
    from benchmarks.gpu_check.train_speed import train_section
    from fastdiff.config import load_config

    start = time.perf_counter()
    sz = sizes(args.smoke, args.steps, args.warmup, args.full_grid)
    if sz.smoke:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="lightning")  # data-loader-worker and logging hints, not findings
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # "GPU available ..." banners of every Trainer
    cfgs = {name: load_config(str(path), sz.net_overrides) for name, path in CONFIGS.items()}
    shape = (3, 32, 32)
    log(f"gpu_check: {'smoke (CPU)' if sz.smoke else 'full (CUDA)'}; training {sz.train_steps} steps "
        f"({sz.train_warmup} warm-up) at batch {sz.train_batch}")
    with tempfile.TemporaryDirectory(prefix="fastdiff-gpu-check-ddp-") as work:
        # smoke: the CLI runs overlap the other sections (their timings mean nothing on the CPU); full: alone,
        # so that no section's timing shares the GPU
        clock: dict[str, float] = {}

        def timed(name: str, fn: Any, *a: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*a)
            clock[name] = clock.get(name, 0.0) + time.perf_counter() - t0
            return out

        child = start_ddp(sz, Path(work)) if sz.smoke else None
        train, weights = timed("training", train_section, cfgs, shape, sz, log)
        if sz.smoke:
            sample = timed("sampling", sampling_section, cfgs, shape, weights, sz, log)
        ddp = timed("ddp", finish_ddp, child or start_ddp(sz, Path(work)), sz, log)
        if not sz.smoke:
            sample = timed("sampling", sampling_section, cfgs, shape, weights, sz, log)

    rows = report.summary_rows(train, ddp, sample, judge_speed=not sz.smoke)
    notes = ["Lightning runs use the Trainer settings of train.py (TensorBoard logger, EMA callback, norm clipping, "
             "bf16-mixed) without checkpointing and without the progress bar; both loops read the same pinned, "
             "pre-made batches."]
    if sz.smoke:
        notes.append("Smoke run: torch.compile skipped on the CPU; DDP uses gloo and overlaps the other sections; "
                     "tiny U-Net; timings mean nothing.")
    notes.append("Wall time per section: " + ", ".join(f"{k} {v:.0f} s" for k, v in clock.items()) + ".")
    info = {"smoke": sz.smoke, "command": "python -m benchmarks.gpu_check " + " ".join(argv),
            "wall": time.perf_counter() - start, "versions": report.versions(), "notes": notes,
            "train_note": f"{sz.train_steps} steps per run, the first {sz.train_warmup} untimed, "
                          f"batch {sz.train_batch}, "
                          f"synthetic CIFAR-shaped data, configs cifar10_vp / cifar10_psld"
                          f"{' with ' + ' '.join(sz.net_overrides) if sz.net_overrides else ''}.",
            "sample_note": f"batch {sz.sample_batch} (seeds 0..{sz.sample_batch - 1}); invariance: seeds "
                           f"0..{sz.invariance_n - 1} again in batches of {sz.invariance_batch}; float32 network; "
                           f"weights of the eager bare training run; {sz.sample_repeats} timed pair(s) per sampler."}
    text = report.markdown(rows, train, sample, info)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="fastdiff-gpu-smoke-")) / "gpu_smoke.md"
                                           if sz.smoke else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)  # never a half-written report
    v = info["versions"]
    log(f"\n{v['device']}: torch {v['torch']}, CUDA {v['cuda']}, driver {v['driver']}, Lightning {v['lightning']}\n\n"
        + report.table(rows) + f"\n\nreport: {out}  ({info['wall']:.0f} s)")
    failed = [f"{r.what} {r.setting}" for r in rows if r.status == "FAIL"]
    if failed:
        print(f"gpu_check: {len(failed)} check(s) failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = parse_args(argv)
        import torch

        if not args.smoke and not torch.cuda.is_available():
            raise UsageError("no CUDA device is visible — run on a machine with a CUDA GPU (and a CUDA build of "
                             "torch), or pass --smoke for the CPU smoke run")
        return run(args, argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # one line unless --debug
        if debug:
            raise
        print(f"error: gpu_check stopped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
              "— rerun with --debug for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
