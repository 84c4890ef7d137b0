"""Contention benchmark (issue 15): the default job's training step, quiet vs beside one CPU-burning process.

    python benchmarks/contention.py [--seconds 15] [--md OUT.md] [--json OUT.json]

One run, four phases, side by side: {quiet, busy} x {fastdiff's thread policy, torch's default of one thread per
core}. "busy" = one extra process spinning ``while True: pass`` (started here, stopped here). The policy phases use
exactly what train.py uses: ``apply_thread_policy()`` once at the start (quiet), then ``ThreadGovernor.poll()``
after every step, so in the busy phase the load appears *after* the thread count was chosen, as when a second
experiment starts beside a running job. Each phase counts optimizer steps over ``--seconds`` of wall time after 3
warm-up steps (a time budget, not a step count, so a 25x collapse cannot make the run take forever).

Reported: steps/s per phase and busy/quiet ratios; issue 15 asks for policy-busy >= 0.35 x policy-quiet (half the
cores are gone, so ~0.5 is the limit). Wall-clock numbers are only meaningful on an otherwise idle machine: rerun
this on a quiet machine before quoting them. OMP_NUM_THREADS / FASTDIFF_THREADS are removed from the environment
at start (they would pin the thread count).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "FASTDIFF_THREADS"):  # before torch is imported: a pinned count defeats the test
    os.environ.pop(_var, None)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fastdiff.utils.threads import ThreadGovernor, affinity_cores, apply_thread_policy  # noqa: E402


def default_job_step() -> Callable[[], None]:
    """One optimizer step of the default job (config defaults: digits, VP, UNet, batch 128, Adam)."""
    from fastdiff.config import load_config
    from fastdiff.data import DiffusionDataModule
    from fastdiff.lightning.module import DiffusionModule
    from fastdiff.losses import diffusion_loss

    cfg = load_config(None, [])
    dm = DiffusionDataModule(**cfg["data"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
    torch.manual_seed(0)
    module = DiffusionModule(cfg, dm.data_shape).train()
    opt = torch.optim.Adam(module.parameters(), lr=cfg["optim"]["lr"])
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = diffusion_loss(module.model, x0, g, P_mean=module.P_mean, P_std=module.P_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(step: Callable[[], None], seconds: float, governor: ThreadGovernor | None) -> dict[str, Any]:
    """Steps per second over ``seconds`` of wall time (after 3 warm-up steps); thread counts seen."""
    for _ in range(3):
        step()
    threads = {torch.get_num_threads()}
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
        if governor is not None:
            threads.add(governor.poll())
    elapsed = time.perf_counter() - start
    return {"steps": n, "seconds": round(elapsed, 3), "steps_per_s": n / elapsed, "threads": sorted(threads),
            "threads_end": torch.get_num_threads()}


def run(seconds: float) -> dict[str, Any]:
    step = default_job_step()
    cores = affinity_cores()
    out: dict[str, Any] = {"cores": cores, "host": platform.node(), "torch": torch.__version__,
                           "seconds_per_phase": seconds}
    policy_quiet_threads = apply_thread_policy()
    gov = ThreadGovernor(interval_s=2.0)
    out["policy_quiet"] = measure(step, seconds, gov)
    torch.set_num_threads(cores)
    out["default_quiet"] = measure(step, seconds, None)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        torch.set_num_threads(policy_quiet_threads)  # as chosen before the load appeared; the governor must react
        gov = ThreadGovernor(interval_s=2.0)
        out["policy_busy"] = measure(step, seconds, gov)
        torch.set_num_threads(cores)
        out["default_busy"] = measure(step, seconds, None)
    finally:
        burner.kill()
        burner.wait()
    out["policy_ratio"] = out["policy_busy"]["steps_per_s"] / out["policy_quiet"]["steps_per_s"]
    out["default_ratio"] = out["default_busy"]["steps_per_s"] / out["default_quiet"]["steps_per_s"]
    out["policy_busy_vs_best_quiet"] = out["policy_busy"]["steps_per_s"] / max(
        out["policy_quiet"]["steps_per_s"], out["default_quiet"]["steps_per_s"])
    return out


def markdown(r: dict[str, Any], note: str = "") -> str:
    """A BENCHMARKS.md section (benchmarks/results/contention.md)."""
    rows = [f"| {phase.replace('_', ' ')} | {r[phase]['steps_per_s']:.2f} | {r[phase]['steps']} | "
            f"{', '.join(map(str, r[phase]['threads']))} |"
            for phase in ("policy_quiet", "default_quiet", "policy_busy", "default_busy")]
    return "\n".join([
        "## CPU contention: the default job beside one busy process (issue 15)", "",
        f"`python benchmarks/contention.py --seconds {r['seconds_per_phase']:g}`: the default job's training step "
        f"(digits, VP, UNet, batch 128), {r['cores']} cores, torch {r['torch']}, {r['seconds_per_phase']:g} s per "
        "phase; busy = one extra process spinning on a core. Policy = fastdiff's thread choice (free cores, "
        "re-measured every 2 s while training); default = torch's one thread per core.", "",
        "| phase | steps/s | steps | threads used |", "|---|---|---|---|", *rows, "",
        f"Busy/quiet: policy **{r['policy_ratio']:.2f}x** (issue 15 asks >= 0.35x; policy busy vs the best quiet "
        f"speed {r['policy_busy_vs_best_quiet']:.2f}x), torch default {r['default_ratio']:.2f}x.", "",
        *([note, ""] if note else [])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="wall time per phase")
    ap.add_argument("--md", default=None, help="also write the table as markdown")
    ap.add_argument("--json", default=None, help="also write the raw results as JSON")
    ap.add_argument("--note", default="", help="a sentence added under the table (e.g. the machine's state)")
    args = ap.parse_args(argv)
    if args.seconds <= 0:
        print(f"error: --seconds must be > 0, got {args.seconds}", file=sys.stderr)
        return 2
    result = run(args.seconds)
    text = markdown(result, args.note)
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
