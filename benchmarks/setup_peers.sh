#!/usr/bin/env bash
# Benchmark-only environment with the peers (k-diffusion, torchsde, diffusers) next to fastdiff.
# The peers are never a fastdiff dependency; `python -m benchmarks quality` without them skips the peer rows.
#
#   bash benchmarks/setup_peers.sh            # then, from the repo root: .venv-bench/bin/python -m benchmarks quality
#   VENV=/elsewhere/.venv-bench bash benchmarks/setup_peers.sh   # another location (e.g. one shared by worktrees)
#
# The venv has no --system-site-packages; torch is pinned first (a CPU wheel when the machine offers one).
set -euo pipefail
REPO="${FASTDIFF_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
VENV="${VENV:-$REPO/.venv-bench}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"  # a fresh venv: no --system-site-packages
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" "torch==2.13.0+cpu" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
# fastdiff itself without its deps, then its deps (torch is already pinned above)
"${PIP[@]}" -e "$REPO" --no-deps
"${PIP[@]}" "lightning>=2.2" "torchmetrics>=1.3" "omegaconf>=2.3" "einops>=0.7" "tensorboard>=2.14" \
    "scikit-learn>=1.3" "scipy>=1.10" "matplotlib>=3.7" "pillow>=9" "numpy>=1.24" pyyaml "pytest>=7"
# the peers: k-diffusion without its (heavy, unused) deps; we import only k_diffusion.utils and k_diffusion.sampling
"${PIP[@]}" --no-deps "k-diffusion==0.1.1.post1"
"${PIP[@]}" safetensors tqdm "torchsde==0.2.6" "torchdiffeq==0.2.5" trampoline
# diffusers: its schedulers only (driven by our continuous-time score); no model weights are ever downloaded
"${PIP[@]}" "diffusers==0.42.1"
cd "$REPO"
"$VENV/bin/python" - <<'PY'
from benchmarks.meta import version_of
from benchmarks.peers import missing_peers
print("peers:", {p: version_of(p) for p in ("k-diffusion", "torchsde", "diffusers")},
      "not importable:", missing_peers() or "none")
PY
