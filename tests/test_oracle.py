"""The oracle: exact mixture scores vs autograd of the exact log-density and a Monte-Carlo estimate."""
from __future__ import annotations

import pytest
import torch

from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP

T64 = torch.float64
PROCS = [VE(sigma_max=5.0), VP(), PSLD()]
IDS = ["ve", "vp", "psld"]


@pytest.mark.parametrize("p", PROCS, ids=IDS)
def test_score_equals_autograd_of_log_density(p):
    gm = GaussianMixture.random(k=3, d=3, seed=0)
    z = torch.randn(6, p.k * 3, dtype=T64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.3, 0.6, 1.0], dtype=T64)
    (grad,) = torch.autograd.grad(gm.log_prob(p, z, t).sum(), z)
    torch.testing.assert_close(gm.score(p, z.detach(), t), grad, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("p", PROCS, ids=IDS)
def test_score_matches_monte_carlo(p):
    """Self-normalised importance estimate E[grad log p(z|x0) | z] over data draws x0 (joint (x, m) for PSLD)."""
    gm = GaussianMixture.ring(k=4, radius=1.0, std=0.2)
    g = torch.Generator().manual_seed(1)
    n = 400_000
    x0 = gm.sample(n, generator=g)
    t = 0.3
    z = p.perturb(x0[:3], t, torch.randn(3, p.k * 2, generator=g, dtype=T64))
    mean_all, L = p.marginal(x0, t)
    cov = torch.kron((L @ L.transpose(-1, -2))[0], torch.eye(2, dtype=T64))
    prec = torch.linalg.inv(cov)
    for zi, exact in zip(z, gm.score(p, z, t)):
        diff = zi[None] - mean_all
        logw = -0.5 * ((diff @ prec) * diff).sum(1)
        w = torch.softmax(logw, 0)
        mc = -(w[:, None] * (diff @ prec)).sum(0)
        torch.testing.assert_close(mc, exact, rtol=0.03, atol=0.03 * exact.abs().max().item())


def test_marginal_samples_match_pushforward():
    """Data pushed through the kernel has the mixture marginal's moments."""
    p = PSLD()
    gm = GaussianMixture.random(k=2, d=2, seed=3)
    g = torch.Generator().manual_seed(4)
    x0 = gm.sample(200_000, generator=g)
    z = p.perturb(x0, 0.05, torch.randn(200_000, 4, generator=g, dtype=T64))
    means, covs = gm.marginal_params(p, 0.05)
    w = gm.weights
    mean = w @ means
    second = torch.einsum("k,kij->ij", w, covs + means[:, :, None] * means[:, None, :])
    torch.testing.assert_close(z.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), second - torch.outer(mean, mean), atol=0.01, rtol=0.02)


def test_bad_parameters():
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0]]])
    with pytest.raises(ValueError, match="coordinates"):
        GaussianMixture.ring().score(VP(), torch.zeros(2, 3), 0.5)


@pytest.mark.parametrize("p", PROCS, ids=lambda p: type(p).__name__)
def test_log_prob_matches_dense_marginal_per_sample_times(p):
    """Vectorised evaluation (one time per sample) equals a dense multivariate-normal mixture built from
    marginal_params at each sample's own time (an independent computation)."""
    mix = GaussianMixture.random(3, 3, seed=1)
    g = torch.Generator().manual_seed(2)
    t = torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    z = torch.randn(6, p.k * 3, generator=g, dtype=torch.float64)
    got = mix.log_prob(p, z, t)
    for i in range(6):
        means, covs = mix.marginal_params(p, t[i].item())
        comps = torch.distributions.MultivariateNormal(means, covariance_matrix=covs).log_prob(z[i])
        want = torch.logsumexp(comps + torch.log(mix.weights), 0)
        assert torch.allclose(got[i], want, rtol=1e-9, atol=1e-9)
