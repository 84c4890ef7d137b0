"""The quality benchmark on several cores: its problems split over worker processes, one torch thread each.

Each worker runs a subset of the problems and stores one part per problem (``quality_cache``), exactly as a
one-process run does; the parent then reads those parts back, so the tables are the same whichever way the work
was split (every run draws from per-sample seeds: results do not depend on the split or the thread count).
Problems go to workers longest first (LPT scheduling) by a rough cost per kind, measured on one core
(BENCHMARKS.md, quality run times): a digits U-Net problem ~10 min, a trained toy2d network ~8, a 64-D mixture ~5
(PSLD's ~9 for both targets), the 2-D rings ~2.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import signal
from typing import Any, Callable

COST_MINUTES = {"digits": 10.0, "trained": 8.0, "image64": 5.0, "rings2d": 2.0}


def cost_of(key: str) -> float:
    """Rough one-core minutes of a problem (see COST_MINUTES), from its key 'process/target/scenario'."""
    _, target, scenario = key.split("/")
    if target == "digits":
        return COST_MINUTES["digits"]
    return COST_MINUTES["trained"] if scenario == "trained" else COST_MINUTES.get(target, 5.0)


def split(keys: list[str], jobs: int) -> list[list[str]]:
    """Keys over at most ``jobs`` groups, longest first onto the least loaded group (LPT); empty groups dropped."""
    groups: list[list[str]] = [[] for _ in range(max(1, jobs))]
    load = [0.0] * len(groups)
    for key in sorted(keys, key=cost_of, reverse=True):
        i = min(range(len(groups)), key=load.__getitem__)
        groups[i].append(key)
        load[i] += cost_of(key)
    return [g for g in groups if g]


def _worker(cfg: Any, keys: list[str], store: Callable[..., None], threads: int) -> None:
    import sys

    import torch

    from benchmarks.quality import run_quality

    torch.set_num_threads(threads)
    run_quality(dataclasses.replace(cfg, only=tuple(keys)), log=lambda s: print(s, file=sys.stderr, flush=True),
                on_problem=store)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_parallel(cfg: Any, keys: list[str], jobs: int, store: Callable[..., None], threads: int = 1) -> None:
    """Run the problems ``keys`` of ``cfg`` in ``jobs`` spawned processes; each stores its parts through ``store``
    (a picklable module-level callable). Raises if a worker fails."""
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch thread pools
    procs = [ctx.Process(target=_worker, args=(cfg, group, store, threads), daemon=True)
             for group in split(keys, jobs)]
    # SIGTERM to the parent (kill, a scheduler) would otherwise leave the workers running and writing parts
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=30)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"quality: {len(failed)} worker(s) failed (exit codes {failed}); see the log above")
