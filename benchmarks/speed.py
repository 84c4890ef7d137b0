"""Speed as ratios measured side by side in one process: sampler overhead, Lightning overhead, sample.py scaling.

    python -m benchmarks speed [--quick] [--batch 64] [--nfe 20] [--rounds 3] [--no-throughput]

Sampler overhead = sampler wall time / the time spent inside the bare network's forward during that same run
(NFE x network forward time, measured by forward hooks; the score function's own work, e.g. the eps -> score
conversion, is reported separately), on the
default U-Net of configs/digits_vp.yaml (digits_psld.yaml for the PSLD-only samplers), freshly initialised
(timing does not depend on the weights), eval mode, one thread. The same for the peers' samplers on the same
network, and for a small network (the toy2d MLP) where the sampler's own work is not hidden behind the network.
Numerator and denominator come from the same run, so machine load hits both; medians over rounds are reported.
Then Lightning vs a bare PyTorch loop (:mod:`benchmarks.train_speed`) and
sample.py with 1 vs 2 processes (python -m benchmarks throughput -> benchmarks/results/throughput.md).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from benchmarks import meta
from benchmarks.noise import BatchNoise
from benchmarks.specs import RunSpec, build_sampler, ggf_options
from fastdiff.config import load_config
from fastdiff.model import ScoreModel, build_score_model
from fastdiff.registry import SAMPLERS
from fastdiff.samplers import list_samplers
from fastdiff.samplers.noise import NoiseSource


@dataclass
class Bench:
    """A network to time samplers on: the score model, its sample shape and a label."""

    label: str
    model: ScoreModel
    shape: tuple[int, ...]  # data batch shape (batch first)

    @property
    def process(self) -> Any:
        return self.model.process


@dataclass
class Timing:
    label: str
    bench: str
    family: str
    calls: list[float] = field(default_factory=list)
    nfe: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)


def build_bench(config: str, batch: int, label: str) -> Bench:
    """A freshly initialised model from a repo config (digits: 1x8x8, toy2d: 2) in eval mode."""
    cfg = load_config(str(meta.REPO / "configs" / config), [])
    data_shape = (1, 8, 8) if cfg["data"]["name"] == "digits" else (2,)
    torch.manual_seed(0)
    return Bench(label, build_score_model(cfg, data_shape).eval(), (batch, *data_shape))


class NetClock:
    """Seconds spent inside the bare network's forward during a run (forward pre/post hooks on ``model.net``)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.total, self._t0 = 0.0, 0.0
        self._hooks = [net.register_forward_pre_hook(self._start), net.register_forward_hook(self._stop)]

    def _start(self, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, *args: Any) -> None:
        self.total += time.perf_counter() - self._t0

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def our_timing_specs(process: Any, nfe: int) -> list[tuple[str, RunSpec, bool]]:
    """(label, spec, batched_noise) for every sampler supporting the process, plus one batched-noise variant."""
    out = []
    for name in list_samplers():
        cls = SAMPLERS.get(name)
        if not cls.supports(process):
            continue
        spec = (RunSpec("fastdiff", name, tol=0.1, options=ggf_options(0.1, 4 * nfe)) if cls.adaptive
                else RunSpec("fastdiff", name, budget=nfe))
        out.append((name, spec, False))
    if SAMPLERS.get("euler_maruyama").supports(process):
        out.append(("euler_maruyama, batched noise (not default)", RunSpec("fastdiff", "euler_maruyama", budget=nfe),
                    True))
    return out


def peer_timing_specs(process: Any, nfe: int) -> list[tuple[str, RunSpec]]:
    from benchmarks import peers

    out = []
    if peers.k_sampling() is not None and process.supports("edm_view"):
        out += [(n, RunSpec("peer", n, budget=nfe)) for n in peers.K_FIXED]
        out.append(("k:dpm_adaptive rtol=0.05", RunSpec("peer", "k:dpm_adaptive", tol=0.05)))
    if peers.torchsde_module() is not None:
        out.append(("torchsde:srk tol=0.1", RunSpec("peer", "torchsde:srk", tol=0.1)))
    return out


class CallCount:
    """Counts batched calls to the score and the seconds spent inside them."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.fn, self.calls, self.rows, self.seconds = fn, 0, 0, 0.0

    def parameters(self) -> Any:
        return self.fn.parameters()  # type: ignore[attr-defined]

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        self.rows += z.shape[0]
        start = time.perf_counter()
        out = self.fn(z, t)
        self.seconds += time.perf_counter() - start
        return out


@dataclass
class RunTime:
    wall: float  # the whole sample() / peer call
    in_net: float  # inside the bare network's forward
    in_score: float  # inside the score function (network + parameterization)
    calls: float  # batched score calls
    nfe: float  # score evaluations per sample
    capped: bool  # an adaptive peer stopped at the cap (per-call figures stay valid)


def time_run(bench: Bench, spec: RunSpec, batched: bool, cap: int) -> RunTime:
    """Time one run on the bench network; default per-sample noise streams unless ``batched``."""
    from benchmarks import peers

    counter = CallCount(bench.model)
    clock = NetClock(bench.model.net)
    n = bench.shape[0]
    noise = BatchNoise(range(n)) if batched else NoiseSource(range(n))
    capped = False
    start = time.perf_counter()
    try:
        if spec.family == "fastdiff":
            with warnings.catch_warnings():  # ggf on an untrained net may hit max_nfe: fine for timing
                warnings.simplefilter("ignore", RuntimeWarning)
                build_sampler(spec).sample(counter, bench.process, bench.shape, noise=noise)
        else:
            try:
                peers.run_peer(spec, counter, bench.process, bench.shape, noise, cap=cap)
            except peers.NFECapExceeded:
                capped = True
        wall = time.perf_counter() - start
    finally:
        clock.close()
    return RunTime(wall, clock.total, counter.seconds, float(counter.calls), counter.rows / n, capped)


def sampler_overheads(benches: list[Bench], nfe: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every sampler and peer on every network, ``rounds`` times; overhead = wall / time inside the network,
    both measured in the same run (same inputs, same machine load)."""
    timings: dict[tuple[str, str], list[RunTime]] = {}
    family: dict[str, str] = {}
    cap = 2 * nfe
    for r in range(rounds):
        for b in benches:
            runs = [(lbl, spec, batched) for lbl, spec, batched in our_timing_specs(b.process, nfe)]
            runs += [(lbl, spec, False) for lbl, spec in peer_timing_specs(b.process, nfe)]
            for lbl, spec, batched in runs:
                with torch.no_grad():
                    rt = time_run(b, spec, batched, cap=cap)
                if rt.capped:
                    lbl += f" (stopped at {cap} calls)"
                timings.setdefault((b.label, lbl), []).append(rt)
                family[lbl] = spec.family
                log(f"round {r} {b.label:22s} {lbl:45s} calls {rt.calls:5.0f} wall {rt.wall:7.3f}s "
                    f"ratio {rt.wall / rt.in_net:.3f}")
    return {"timings": timings, "family": family, "benches": [b.label for b in benches]}


def run_throughput(quick: bool, out_dir: Path, log: Callable[[str], None]) -> str | None:
    """python -m benchmarks throughput -> <out_dir>/throughput.md; returns its scaling line."""
    out = out_dir / "throughput.md"
    cmd = [sys.executable, "-m", "benchmarks", "throughput", "--md", str(out)] + (["--n", "128"] if quick else [])
    log("running " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=meta.REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(meta.REPO)})
    if proc.returncode != 0:
        log(proc.stderr[-2000:])
        return f"sample_throughput.py failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    text = out.read_text()
    shown = out.relative_to(meta.REPO) if out.is_relative_to(meta.REPO) else out
    cmd_note = f"(written by `python -m benchmarks throughput --md {shown}" + (" --n 128`)" if quick else "`)")
    out.write_text("## sample.py throughput, 1 vs 2 processes\n\n" + text + f"\n{cmd_note}\n")
    return next((ln for ln in text.splitlines() if ln.startswith("Scaling")), None)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="1 round, fewer training steps, 128 samples for sample.py")
    ap.add_argument("--batch", type=int, default=64, help="U-Net batch (default 64)")
    ap.add_argument("--nfe", type=int, default=20, help="NFE budget of the fixed-step samplers (default 20)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3, quick 1)")
    ap.add_argument("--train-steps", type=int, default=None, help="steps per training round (default 40, quick 15)")
    ap.add_argument("--no-throughput", action="store_true", help="skip sample.py 1 vs 2 processes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=str(meta.RESULTS))


def main(args: argparse.Namespace) -> None:
    from benchmarks.speed_report import speed_markdown
    from benchmarks.train_speed import compare_training

    torch.set_num_threads(args.threads)
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    rounds = args.rounds or (1 if args.quick else 3)
    command = meta.command_line()
    start = time.perf_counter()
    benches = [build_bench("digits_vp.yaml", args.batch, "U-Net digits_vp (VP)"),
               build_bench("digits_psld.yaml", args.batch, "U-Net digits_psld (PSLD)"),
               build_bench("toy2d_vp.yaml", 1024, "toy2d MLP (VP), batch 1024")]
    over = sampler_overheads(benches, args.nfe, rounds, log)
    cfg = load_config(str(meta.REPO / "configs" / "digits_vp.yaml"), [])
    steps = args.train_steps or (15 if args.quick else 40)
    training = compare_training(cfg, (1, 8, 8), batch=cfg["data"]["batch_size"], steps=steps, rounds=rounds)
    log(f"training: {training}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scaling = None if args.no_throughput else run_throughput(args.quick, out, log)
    text = speed_markdown(over, training, scaling, args, benches, command, time.perf_counter() - start)
    (out / "speed.md").write_text(text)
    print(text)
