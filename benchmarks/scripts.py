"""Thin subcommands that run the per-paper benchmark modules of this package with their own arguments."""
from __future__ import annotations

import importlib
import sys

SCRIPTS: dict[str, str] = {  # subcommand -> module of the benchmarks package (each has a main() reading sys.argv)
    "restart": "benchmarks.restart_bench",
    "ggf": "benchmarks.ggf_bench",
    "splitting": "benchmarks.splitting_bench",
    "throughput": "benchmarks.sample_throughput",
    "nfe": "benchmarks.nfe_table",
}


def run_script(name: str, argv: list[str]) -> int:
    """Run ``main()`` of the subcommand's module with ``argv`` (its own --help lists its options)."""
    if name not in SCRIPTS:
        raise ValueError(f"unknown benchmark script {name!r}; allowed: {', '.join(SCRIPTS)}")
    module = importlib.import_module(SCRIPTS[name])
    saved = sys.argv
    sys.argv = [f"python -m benchmarks {name}", *argv]
    try:
        return int(module.main() or 0)
    finally:
        sys.argv = saved
