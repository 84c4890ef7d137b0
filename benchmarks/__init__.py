"""fastdiff's reproducible benchmarks: a top-level package of the repository, never shipped in the fastdiff wheel.

Run from the repository root:

    python -m benchmarks quality [--quick] [--ckpt PATH ...]   # benchmarks/results/quality.md (+ quality.csv, plots)
    python -m benchmarks checkpoints                           # train the small benchmark networks when absent
    python -m benchmarks speed [--quick]                       # benchmarks/results/speed.md (+ throughput.md)
    python -m benchmarks report                                # BENCHMARKS.md from benchmarks/results/*.md
    python -m benchmarks restart|ggf|splitting|throughput|nfe [args]   # the per-paper benchmark modules

The peers live in a benchmark-only environment (``bash benchmarks/setup_peers.sh`` -> ``.venv-bench``); they are
imported lazily and are never a dependency of fastdiff (fastdiff has no reference to this package).
"""
