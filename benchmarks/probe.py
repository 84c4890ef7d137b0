"""Probe: chosen samplers (with options) on oracle problems, the quality benchmark's metrics, one line per sampler.

    python benchmarks/probe.py PROBLEMS SPECS BUDGETS
    python benchmarks/probe.py psld/image64,vp/image64 "ours:exp_ode;ours:exp_ode,t_eps=1e-4" 8,10,20,35,50,100
    python benchmarks/probe.py vp/rings2d "ours:deis;peer:d:deis_3_karras" 5,6,8

PROBLEMS: process/target pairs (exact score) or checkpoint paths (``*.ckpt``: a trained network). SPECS:
';'-separated ``ours:NAME[,key=value...]`` (values are Python literals) or ``peer:NAME``. Prints
``NFE:gap±SE/p<pathwise error>`` per budget (n = 2000, digits networks 500; the benchmark's reference sample and
reference solve). Used for the end-time tables of benchmarks/results/frontier.md.
"""
from __future__ import annotations

import ast
import sys

import torch

from benchmarks.instrument import Instrument
from benchmarks.problems import oracle_problem, trained_problem
from benchmarks.quality import QualityConfig, reference_solve, run_one
from benchmarks.specs import RunSpec


def parse_spec(text: str) -> tuple[str, str, dict[str, object]]:
    """'ours:exp_ode,t_eps=1e-4' -> ('fastdiff', 'exp_ode', {'t_eps': 0.0001}); 'peer:k:lms' -> ('peer', 'k:lms', {})."""
    family, _, rest = text.partition(":")
    if family == "peer":
        return "peer", rest, {}
    name, *pairs = rest.split(",")
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = ast.literal_eval(value)
    return "fastdiff", name, options


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    cfg = QualityConfig(n=2000, n_ref=40000)
    budgets = [int(b) for b in argv[2].split(",")]
    for key in argv[0].split(","):
        if key.endswith(".ckpt"):  # a trained toy2d or digits network (digits: fd_digits at n = 500)
            problem = trained_problem(key)
            key = problem.key
        else:
            process, target = key.split("/")
            problem = oracle_problem(process, target, "exact")
        instrument = (None if problem.mixture is None else
                      Instrument(problem.mixture, cfg.n, n_ref=cfg.n_ref, secondary=False))
        x_ref, _ = reference_solve(problem, cfg)
        for text in argv[1].split(";"):
            family, name, options = parse_spec(text)
            cells = []
            for b in budgets:
                r = run_one(RunSpec(family, name, budget=b, options=options), problem, cfg, instrument, x_ref)
                path = float("nan") if r.path is None else r.path
                cells.append(f"{b}:{r.gap:+.2f}±{r.gap_se:.2f}/p{path:.3f}" if r.status == "ok" else f"{b}:{r.status}")
            print(f"{key:20s} {text:40s} " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
