"""What the command-line tools print: quiet by default (no Lightning banners, tips or known-harmless warnings),
everything with ``--verbose`` (or FASTDIFF_VERBOSE=1)."""
from __future__ import annotations

import logging
import os
import warnings

VERBOSE_FLAGS = ("--verbose", "-v")
# Warnings that say nothing actionable about a fastdiff job (message regexes).
HARMLESS_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # lightning's _pytree vs newer torch
    r".*number of training batches .* is smaller than the logging interval.*",  # epochs are short by design
    r".*does not have many workers which may be a bottleneck.*",  # data is in memory; workers only add start-up
    r".*Trainer\(limit_val_batches=.*\) was configured so .* will be used.*",
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


def pop_verbose(argv: list[str]) -> tuple[bool, list[str]]:
    """(verbose?, argv without the verbose flags); FASTDIFF_VERBOSE=1 also turns it on."""
    verbose = any(a in VERBOSE_FLAGS for a in argv) or os.environ.get("FASTDIFF_VERBOSE", "") not in ("", "0")
    return verbose, [a for a in argv if a not in VERBOSE_FLAGS]


def configure_output(verbose: bool) -> None:
    """Quiet: Lightning's info lines (GPU/TPU availability, litlogger tip, 'fit stopped') and the harmless warnings
    off. Verbose: Lightning's defaults. Called in every process (DDP ranks re-run the entry point)."""
    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO: set ours afterwards)

    level = logging.INFO if verbose else logging.WARNING
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not verbose:
        for pattern in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)


def start_job(verbose: bool) -> int:
    """After the inputs are checked, before the work: the CPU thread policy and the output level; returns the
    intra-op thread count (printed with --verbose)."""
    import sys

    from fastdiff.utils.threads import apply_thread_policy

    threads = apply_thread_policy()
    configure_output(verbose)
    if verbose:
        print(f"torch intra-op threads: {threads} (free cores; pin with FASTDIFF_THREADS=N)", file=sys.stderr)
    return threads
