#!/usr/bin/env bash
# Benchmark-only environment with the peers (k-diffusion, torchsde) next to fastdiff: .venv-bench at the repo root.
# The peers are never a fastdiff dependency; `python -m fastdiff.bench quality` without them skips the peer rows.
#
#   bash benchmarks/setup_peers.sh            # then: .venv-bench/bin/python -m fastdiff.bench quality
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv-bench}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"  # a fresh venv: no --system-site-packages
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" "torch==2.13.0"
# fastdiff itself without its deps, then its deps (torch is already pinned above)
"${PIP[@]}" -e "$REPO" --no-deps
"${PIP[@]}" "lightning>=2.2" "torchmetrics>=1.3" "omegaconf>=2.3" "einops>=0.7" "tensorboard>=2.14" \
    "scikit-learn>=1.3" "scipy>=1.10" "matplotlib>=3.7" "pillow>=9" "numpy>=1.24" pyyaml "pytest>=7"
# the peers: k-diffusion without its (heavy, unused) deps; we import only k_diffusion.utils and k_diffusion.sampling
"${PIP[@]}" --no-deps "k-diffusion==0.1.1.post1"
"${PIP[@]}" safetensors tqdm "torchsde==0.2.6" "torchdiffeq==0.2.5" trampoline
"$VENV/bin/python" - <<'PY'
from fastdiff.bench.meta import version_of
from fastdiff.bench.peers import missing_peers
print("peers:", {p: version_of(p) for p in ("k-diffusion", "torchsde")}, "not importable:", missing_peers() or "none")
PY
