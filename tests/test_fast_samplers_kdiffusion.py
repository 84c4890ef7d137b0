"""Our fast solvers against k-diffusion's samplers on one fixed (exact Gaussian) denoiser and the same noise.

Skipped unless k-diffusion is importable (it lives only in .venv-bench, never a fastdiff dependency). Run with
    PYTHONPATH=$PWD /work/main/.venv-bench/bin/python -m pytest -q tests/test_fast_samplers_kdiffusion.py

Both sides run in float64 on the same sigma grid (ours, Karras, with the final 0) and the same per-seed standard
normals, so they differ by rounding only: ~1e-16 relative per operation, |x̃| <= ~80, <= 10 steps, divided
differences amplifying by <= ~10 -> ~1e-12; atol = 1e-9 (1000x margin). k-diffusion's lms integrates its Lagrange
basis with scipy's quad, whose 21-point Gauss-Kronrod rule is exact for the degree <= 3 basis polynomials, so the
same tolerance applies there.
"""
from __future__ import annotations

import math

import pytest
import torch

from fastdiff.oracle import GaussianMixture
from fastdiff.processes import VE, VP
from fastdiff.samplers import get_sampler


def _k_sampling():
    for mod in ("benchmarks.peers", "fastdiff.bench.peers"):  # the bench package is moving out of fastdiff
        try:
            return __import__(mod, fromlist=["k_sampling"]).k_sampling()
        except (ImportError, AttributeError):
            continue
    return None


K = _k_sampling()
pytestmark = pytest.mark.skipif(K is None, reason="k-diffusion is not importable (it lives in .venv-bench only)")

MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
COV = torch.tensor([[0.30, 0.12], [0.12, 0.10]], dtype=torch.float64)
GAUSS = GaussianMixture.gaussian(MU, COV)
PROCESSES = {"ve": lambda: VE(sigma_min=0.01, sigma_max=5.0), "vp": VP}
SEEDS = list(range(5))


def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of N(mu, C), per-row sigma (k-diffusion's model(x, sigma) convention)."""
    s2 = sigma.double().reshape(-1, 1, 1) ** 2
    cov = COV + s2 * torch.eye(2, dtype=torch.float64)
    return MU + (COV @ torch.linalg.solve(cov, (x - MU).unsqueeze(-1))).squeeze(-1)


class Streams:
    """Each seed's own standard normals, in order (the draws NoiseSource makes); the first one is the prior."""

    def __init__(self, seeds: list[int]) -> None:
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]

    def next(self) -> torch.Tensor:
        return torch.stack([torch.randn(2, generator=g) for g in self.gens]).double()

    def plain(self):
        return lambda sigma, sigma_next: self.next()

    def brownian_pairs(self):
        """k-diffusion's dpmpp_sde asks for (sigma, sigma_s) then (sigma, sigma'): one Brownian path in sigma."""
        state = {}

        def sample(sigma, sigma_next):
            a, b = float(sigma), float(sigma_next)
            if "first" not in state:
                state["first"], state["ab"] = self.next(), (a, b)
                return state["first"]
            xa, (a0, s) = state.pop("first"), state.pop("ab")
            xb = self.next()
            return (math.sqrt(a0 - s) * xa + math.sqrt(s - b) * xb) / math.sqrt(a0 - b)

        return sample


CASES = [  # (ours, our options, k-diffusion function, its kwargs, noise replay)
    ("dpmpp_2m", {}, "sample_dpmpp_2m", {}, None),
    ("dpmpp_3m", {"taylor_d2": False, "lower_order_final": False}, "sample_dpmpp_3m_sde", {"eta": 0.0}, "plain"),
    ("dpmpp_2m_sde", {}, "sample_dpmpp_2m_sde", {"eta": 1.0}, "plain"),
    ("dpmpp_2m_sde", {"eta": 0.5}, "sample_dpmpp_2m_sde", {"eta": 0.5}, "plain"),
    ("dpmpp_3m_sde", {"taylor_d2": False, "lower_order_final": False}, "sample_dpmpp_3m_sde", {"eta": 1.0}, "plain"),
    ("dpmpp_sde", {}, "sample_dpmpp_sde", {"eta": 1.0}, "brownian_pairs"),
    ("dpmpp_sde", {"eta": 0.0}, "sample_dpmpp_sde", {"eta": 0.0}, "brownian_pairs"),
    ("lms", {}, "sample_lms", {"order": 4}, None),
    ("edm_euler", {}, "sample_euler", {}, None),
]


@pytest.mark.parametrize("pname", ["ve", "vp"])
@pytest.mark.parametrize("ours,opts,theirs,kw,replay", CASES, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_agrees_with_k_diffusion(pname, ours, opts, theirs, kw, replay):
    process = PROCESSES[pname]()
    sampler = get_sampler(ours, steps=8, dtype="float64", **opts)
    res = sampler.sample(GAUSS.score_fn(process), process, (len(SEEDS), 2), seeds=SEEDS)
    sigmas = sampler.sigmas(process, torch.device("cpu"))
    streams = Streams(SEEDS)
    x = streams.next() * sigmas[0]
    if replay is not None:
        kw = {**kw, "noise_sampler": getattr(streams, replay)()}
    out = getattr(K, theirs)(denoiser, x, sigmas, disable=True, **kw)
    torch.testing.assert_close(res.state, out, atol=1e-9, rtol=0)
