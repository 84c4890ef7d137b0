"""Closed-form references on Gaussian data N(MU, COV), shared by the sampler tests (one copy).

For Gaussian data the exact score is linear and the probability-flow ODE in the EDM view (x̃ = x / s(t), noise
level sigma) has the closed-form solution edm_flow; the denoiser E[x0 | x̃] is exact_denoiser. ``draws`` replays
the standard normals each sample's own stream produces (NoiseSource: one generator per seed, float32 draws).
"""
from __future__ import annotations

import torch

from fastdiff.oracle import GaussianMixture

MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
COV = torch.tensor([[0.30, 0.12], [0.12, 0.10]], dtype=torch.float64)  # anisotropic: eigenvalues 0.36, 0.04
GAUSS = GaussianMixture.gaussian(MU, COV)


def draws(seed: int, shape: tuple[int, ...], count: int) -> list[torch.Tensor]:
    """The first ``count`` standard-normal draws of one sample's stream (float32 draws, as NoiseSource makes)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).double() for _ in range(count)]


def first_draws(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Each seed's first draw (the prior draw of every sampler), stacked."""
    return torch.stack([draws(s, shape, 1)[0] for s in seeds])


def exact_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x̃; sigma) = E[x0 | x̃] = mu + C (C + sigma^2 I)^-1 (x̃ - mu)."""
    cov = COV + sigma**2 * torch.eye(2, dtype=torch.float64)
    return MU + (COV @ torch.linalg.solve(cov, (x - MU).T)).T


def edm_flow(x: torch.Tensor, sigma0: float, sigma1: float) -> torch.Tensor:
    """Exact PF-ODE map x̃(sigma0) -> x̃(sigma1) for N(mu, C): mu + (C + s1^2)^1/2 (C + s0^2)^-1/2 (x̃ - mu)."""
    lam, q = torch.linalg.eigh(COV)
    return MU + ((x - MU) @ q) * torch.sqrt((lam + sigma1**2) / (lam + sigma0**2)) @ q.T


def gaussian_score(z: torch.Tensor, scale: float, sigma: float) -> torch.Tensor:
    """Exact score of N(s mu, s^2 (C + sigma^2 I)) at z (rows)."""
    cov = scale**2 * (COV + sigma**2 * torch.eye(2, dtype=torch.float64))
    return -torch.linalg.solve(cov, (z - scale * MU).T).T


def karras(n: int, lo: float, hi: float, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022, Eq. 5 (n points from hi down to lo)."""
    return [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)]


def edm_range(process) -> tuple[float, float]:
    """[0.002, 80] clipped to the process's sigma on [t_eps_train, T] (the EDM samplers' default range)."""
    lo = float(process.sigma(torch.tensor([process.t_eps_train], dtype=torch.float64)))
    hi = float(process.sigma(torch.tensor([process.T], dtype=torch.float64)))
    return max(0.002, lo), min(80.0, hi)


def slope(steps: list[int], errs: list[float]) -> float:
    """Least-squares slope of -log(err) against log(steps): the observed order."""
    x = torch.log(torch.tensor(steps, dtype=torch.float64))
    y = -torch.log(torch.tensor(errs, dtype=torch.float64))
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc**2).sum())


def moment_errors(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """Largest |mean error| and |cov error| in units of their standard errors for n samples."""
    n = x.shape[0]
    x = x.double().reshape(n, -1)
    dm = (x.mean(0) - mean).abs() / torch.sqrt(torch.diagonal(cov) / n)
    se_cov = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    dc = (torch.cov(x.T) - cov).abs() / se_cov
    return float(dm.max()), float(dc.max())
