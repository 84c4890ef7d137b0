"""A score that is exact below a noise level sigma_b and biased above it (a learned score's typical error profile).

Above sigma_b the score is the exact score of a *perturbed* mixture (weights tilted by exp(+-tilt), means shifted
along the diagonal by ``shift`` component stds, covariances x ``inflate``); at and below sigma_b it is exact.
sigma_b is compared with sigma_eff(t) = exp(-logSNR(t) / 2), the EDM sigma on VE/VP.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fastdiff.oracle import GaussianMixture
from fastdiff.processes.base import Process
from fastdiff.samplers.restart import sigma_eff


def perturbed(mix: GaussianMixture, tilt: float, shift: float, inflate: float) -> GaussianMixture:
    """The mixture a biased score 'believes' in: tilted weights, shifted means, inflated covariances."""
    k, d = mix.means.shape
    signs = torch.tensor([(-1.0) ** i for i in range(k)], dtype=torch.float64)
    direction = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    comp_std = torch.diagonal(mix.covs, dim1=-2, dim2=-1).mean().sqrt().item()
    return GaussianMixture(mix.weights * torch.exp(tilt * signs), mix.means + shift * comp_std * direction,
                           mix.covs * inflate)


class BiasedScore:
    """score_fn(z, t): exact score of ``mix`` where sigma_eff(t) <= sigma_b, of ``wrong`` above (picklable).

    With ``wrong=None`` it is the exact score everywhere.
    """

    def __init__(self, mix: GaussianMixture, wrong: GaussianMixture | None, process: Process, sigma_b: float) -> None:
        self.good, self.process, self.sigma_b = mix.score_fn(process), process, float(sigma_b)
        self.bad = wrong.score_fn(process) if wrong is not None else None

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        if self.bad is None:
            return self.good(z, t)
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(z.shape[0])
        above = sigma_eff(self.process, t) > self.sigma_b * (1 + 1e-9)
        if not bool(above.any()):
            return self.good(z, t)
        if bool(above.all()):
            return self.bad(z, t)
        out = self.good(z, t)
        out[above] = self.bad(z[above], t[above])
        return out
