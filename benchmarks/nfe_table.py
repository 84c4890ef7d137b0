"""Counted NFE of every registered sampler, on every process it supports, at requested budgets (markdown table).

Each sampler is built with ``get_sampler(name, nfe=budget)`` (default options) and run on a small 2-D ring
mixture with the exact oracle score; the table gives the NFE counted by ``SampleResult`` (score evaluations per
sample) and the step count, flags any count above the budget, and prints the sampler's own error for budgets
below its minimum. The adaptive ``ggf`` takes no budget: its mean / max counted NFE per sample are reported at
eps_rel 0.1 / 0.05 / 0.02 / 0.01 instead.

    python -m benchmarks nfe [--n 64] [--out benchmarks/results/nfe_accounting.md]
"""
from __future__ import annotations

import argparse
import platform
import sys

import torch

import fastdiff.processes  # noqa: F401  (registers the processes)
from fastdiff.oracle import GaussianMixture
from fastdiff.registry import PROCESSES, SAMPLERS
from fastdiff.samplers import SamplerError, get_sampler, list_samplers
from fastdiff.samplers.base import cls_supports

BUDGETS = (10, 20, 50, 100)
EPS_RELS = (0.1, 0.05, 0.02, 0.01)


def budget_cell(name: str, process_name: str, budget: int, mix: GaussianMixture, n: int,
                errors: list[str], notes: list[str]) -> str:
    """'counted (steps S)' for one sampler / process / budget; on an error, a footnote number. Over-budget counts
    and counts differing from the sampler's own prediction are added to ``notes``."""
    process = PROCESSES.get(process_name)()
    try:
        sampler = get_sampler(name, nfe=budget)
        res = sampler.sample(mix.score_fn(process), process, (n, mix.dim), seeds=range(n))
    except SamplerError as e:
        errors.append(f"{name} / {process_name} / nfe={budget}: {e}")
        return f"error [{len(errors)}]"
    flags = []
    if int(res.nfe_per_sample.max()) > budget:
        flags.append("OVER BUDGET")
    if res.nfe != sampler.nfe:
        flags.append(f"predicted {sampler.nfe}")
    if flags:
        notes.append(f"{name} / {process_name} / nfe={budget}: counted {res.nfe}, {', '.join(flags)}")
    return f"{res.nfe} ({sampler.steps} steps)" + (f" **{', '.join(flags)}**" if flags else "")


def adaptive_cell(name: str, process_name: str, eps_rel: float, mix: GaussianMixture, n: int) -> str:
    """'mean / max (published)': counted NFE per sample, and the paper's figure (2 x loop iterations of the slowest
    sample, no final denoise; ``info["nfe_published"]``) where the sampler reports it."""
    process = PROCESSES.get(process_name)()
    res = get_sampler(name, eps_rel=eps_rel).sample(mix.score_fn(process), process, (n, mix.dim), seeds=range(n))
    pub = res.info.get("nfe_published")
    return f"{res.nfe_per_sample.double().mean().item():.1f} / {res.nfe_max}" + ("" if pub is None else f" ({pub})")


def build_table(n: int) -> str:
    mix = GaussianMixture.ring(8, 1.0, 0.1)
    errors: list[str] = []
    notes: list[str] = []
    lines = ["## Counted NFE at requested budgets", "",
             "`get_sampler(name, nfe=B)` with default options, 2-D ring of 8 Gaussians, exact score, "
             f"n = {n} samples; cell = counted NFE per sample (steps); **OVER BUDGET** if any sample used more than B.",
             "", "| sampler | process | " + " | ".join(f"nfe={b}" for b in BUDGETS) + " |",
             "|---|---|" + "---|" * len(BUDGETS)]
    adaptive: list[tuple[str, str]] = []
    for name in list_samplers():
        cls = SAMPLERS.get(name)
        for pname in PROCESSES.names():
            if not cls_supports(cls, PROCESSES.get(pname)):
                continue
            if cls.adaptive:
                adaptive.append((name, pname))
                continue
            cells = [budget_cell(name, pname, b, mix, n, errors, notes) for b in BUDGETS]
            lines.append(f"| {name} | {pname} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines += ["", "Summary: " + ("no sampler used more than its budget and every counted NFE equals the sampler's "
                                 "own prediction (`Sampler.nfe`)." if not notes else
                                 f"{len(notes)} cell(s) flagged: " + "; ".join(notes))]
    if errors:
        lines += ["", "Errors raised (the sampler's own message):", ""]
        lines += [f"{i + 1}. {e}" for i, e in enumerate(errors)]
    lines += ["", "## Adaptive samplers: counted NFE per sample (mean / max) vs tolerance", "",
              "Default options except eps_rel (final Tweedie denoise included). In brackets: the NFE as the GGF paper "
              "reports it, 2 x loop iterations of the slowest sample without the final denoise "
              "(`info['nfe_published']`), to compare with its 329/274/179/147 (CIFAR-10 VP).", "",
              "| sampler | process | " + " | ".join(f"eps_rel={e}" for e in EPS_RELS) + " |",
              "|---|---|" + "---|" * len(EPS_RELS)]
    for name, pname in adaptive:
        cells = [adaptive_cell(name, pname, e, mix, n) for e in EPS_RELS]
        lines.append(f"| {name} | {pname} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="samples per run")
    ap.add_argument("--out", default=None, help="write the markdown here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    head = ("# NFE accounting of the registered samplers\n\n"
            f"Command: `python -m benchmarks nfe --n {args.n}"
            + (f" --out {args.out}`" if args.out else "`") + "\n\n"
            f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()} CPU "
            "(2 cores, no GPU), 1 thread.\n\n")
    text = head + build_table(args.n)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
