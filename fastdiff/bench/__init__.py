"""Reproducible benchmarks: quality per NFE against peers (k-diffusion, torchsde) and speed ratios.

    python -m fastdiff.bench quality [--quick] [--ckpt PATH ...]   # benchmarks/results/quality.md + PNG plots
    python -m fastdiff.bench speed [--quick]                        # benchmarks/results/speed.md (+ throughput.md)
    python -m fastdiff.bench report                                 # BENCHMARKS.md from benchmarks/results/*.md

The peers live in a benchmark-only environment (``bash benchmarks/setup_peers.sh`` -> ``.venv-bench``); they are
imported lazily and are never a dependency of fastdiff.
"""
