"""Markdown for the speed benchmark (benchmarks/results/speed.md)."""
from __future__ import annotations

import argparse
import statistics
from typing import Any

from benchmarks import meta
from benchmarks.peers import MISSING, missing_peers

# our sampler -> the peer doing the same algorithm (same grid, same NFE)
SAME_ALGORITHM = {"edm_euler": "k:euler", "edm_heun": "k:heun", "dpmpp_2m": "k:dpmpp_2m"}


def _med(v: list[float]) -> float:
    return statistics.median(v) if v else float("nan")


def ratios(over: dict[str, Any], bench: str) -> dict[str, float]:
    """label -> median over rounds of wall / time inside the network."""
    return {lbl: _med([rt.wall / rt.in_net for rt in runs]) for (b, lbl), runs in over["timings"].items() if b == bench}


def overhead_table(over: dict[str, Any], bench: str) -> list[str]:
    items = [(lbl, runs) for (b, lbl), runs in over["timings"].items() if b == bench]
    per_call = _med([rt.in_net / rt.calls for _, runs in items for rt in runs])
    lines = [f"**{bench}**: network forward {1e3 * per_call:.2f} ms per batched call (median over all runs).", "",
             "| sampler | NFE / sample | batched calls | wall s | in network s | in score wrapper s | sampler's own s "
             "| wall / network (1 = no overhead) |", "|---|---|---|---|---|---|---|---|"]
    for lbl, runs in sorted(items, key=lambda it: (over["family"][it[0]] != "fastdiff", it[0])):
        wall, net = _med([r.wall for r in runs]), _med([r.in_net for r in runs])
        score = _med([r.in_score for r in runs])
        name = lbl if over["family"][lbl] == "fastdiff" else f"*{lbl}*"
        lines.append(f"| {name} | {_med([r.nfe for r in runs]):.1f} | {_med([r.calls for r in runs]):.0f} "
                     f"| {wall:.3f} | {net:.3f} | {score - net:.3f} | {wall - score:.3f} "
                     f"| {_med([r.wall / r.in_net for r in runs]):.3f} |")
    return lines + [""]


def losses(over: dict[str, Any]) -> list[str]:
    """Our ratio vs the same algorithm's in k-diffusion, per network."""
    out = []
    for bench in over["benches"]:
        rows = ratios(over, bench)
        for ours, peer in SAME_ALGORITHM.items():
            if ours in rows and peer in rows:
                diff = rows[ours] / rows[peer] - 1
                word = "slower" if diff > 0 else "faster"
                out.append(f"- {bench}: `{ours}` wall / network {rows[ours]:.3f} vs `{peer}` {rows[peer]:.3f} "
                           f"({abs(100 * diff):.1f}% {word} end to end at the same NFE)")
    return out


def speed_markdown(over: dict[str, Any], training: dict[str, Any], scaling: str | None, args: argparse.Namespace,
                   benches: list[Any], command: str, seconds: float) -> str:
    missing = missing_peers()
    lines = meta.header("Speed (ratios measured side by side)", command, [
        f"Setup: fixed-step samplers at NFE budget {args.nfe}, ggf eps_rel 0.1, k-diffusion dpm_adaptive rtol 0.05, "
        f"torchsde srk tol 0.1; {args.rounds or (1 if args.quick else 3)} round(s); samplers use the "
        "default per-sample noise streams (`NoiseSource`) unless marked. Ratio = sampler wall time / time spent "
        "inside the bare network's forward in the same run (forward hooks), median over rounds; 'in score "
        "wrapper' is the parameterization (eps -> score) around the network, 'sampler's own' everything else. "
        "Networks freshly initialised (timing does not depend on weights), eval mode.",
        "", f"Peers: {MISSING} — missing: {', '.join(missing)}." if missing else "Peers: k-diffusion and torchsde "
        "on the same networks.", "", f"Total run time: {seconds / 60:.1f} min.", ""])
    lines += ["### Sampler overhead", ""]
    for b in benches:
        lines += overhead_table(over, b.label)
    loss = losses(over)
    lines += ["Same algorithm, ours vs k-diffusion:", ""] + (loss or ["- (peers not installed)"]) + [""]
    lines += ["### Training step: Lightning vs a bare PyTorch loop", "",
              f"digits_vp U-Net, batch {training['batch']}, {training['steps']} steps per round (first 5 dropped), "
              f"{training['rounds']} alternating round(s); both do loss, backward, clipping, Adam + warm-up, EMA; "
              "Lightning also logs (TensorBoard, as train.py).", "",
              "| round | Lightning ms/step | bare ms/step | ratio |", "|---|---|---|---|"]
    for i, (a, b, r) in enumerate(zip(training["lightning_ms"], training["bare_ms"], training["ratios"])):
        lines.append(f"| {i} | {a:.1f} | {b:.1f} | {r:.3f} |")
    lines += ["", f"Median ratio Lightning / bare: {training['ratio']:.3f}.", ""]
    lines += ["### sample.py: 1 vs 2 processes", "",
              (scaling or "skipped (--no-throughput)") + " Details: the throughput section (benchmarks/results/"
              "throughput.md).", ""]
    return "\n".join(lines) + "\n"
