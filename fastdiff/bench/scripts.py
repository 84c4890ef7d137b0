"""Thin subcommands that run the per-paper benchmark scripts in benchmarks/ with their own arguments."""
from __future__ import annotations

import runpy
import sys

from fastdiff.bench.meta import REPO

SCRIPTS: dict[str, str] = {
    "restart": "benchmarks/restart_bench.py",
    "ggf": "benchmarks/ggf_bench.py",
    "splitting": "benchmarks/splitting_bench.py",
    "throughput": "benchmarks/sample_throughput.py",
}


def run_script(name: str, argv: list[str]) -> None:
    """Run benchmarks/<script>.py as __main__ with ``argv`` (its own --help lists its options)."""
    if name not in SCRIPTS:
        raise ValueError(f"unknown benchmark script {name!r}; allowed: {', '.join(SCRIPTS)}")
    path = REPO / SCRIPTS[name]
    if not path.exists():
        raise SystemExit(f"{SCRIPTS[name]} not found (the per-paper scripts live in the repository, not the wheel)")
    saved = sys.argv
    sys.argv = [str(path), *argv]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = saved
