"""Variance-preserving SDE (Song et al. 2021) with a linear beta schedule."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import PROCESSES
from .base import EDMView, scalar_block


@PROCESSES.register("vp")
@dataclass
class VP(EDMView):
    """VP SDE: f = -beta(t) z / 2, g = sqrt(beta(t)); kernel alpha x0 + sqrt(1 - alpha^2) eps."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    t_eps_sample: float = 1e-3

    def __post_init__(self) -> None:
        rule = "VP needs 0 < beta_min <= beta_max"
        if not self.beta_min > 0:
            raise ValueError(f"beta_min: {self.beta_min!r} is out of range — {rule}")
        if not self.beta_max >= self.beta_min:
            raise ValueError(f"beta_max: {self.beta_max!r} is below beta_min={self.beta_min!r} — {rule}")
        self.check_sample_time()

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + torch.as_tensor(t, dtype=torch.float64) * (self.beta_max - self.beta_min)

    def beta_integral(self, t: Tensor) -> Tensor:
        """B(t) = int_0^t beta."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.beta_integral(t))

    def scale(self, t: Tensor) -> Tensor:
        return self.alpha(t)

    def sigma(self, t: Tensor) -> Tensor:
        # sqrt(1 - alpha^2) / alpha = sqrt(exp(B) - 1), computed stably
        return torch.sqrt(torch.expm1(self.beta_integral(t)))

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        # solve beta_min t + (beta_max - beta_min) t^2 / 2 = log(1 + sigma^2)
        target = torch.log1p(torch.as_tensor(sigma, dtype=torch.float64) ** 2)
        d = self.beta_max - self.beta_min
        if d == 0:
            return target / self.beta_min
        return (torch.sqrt(self.beta_min**2 + 2 * d * target) - self.beta_min) / d

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        B = self.beta_integral(t)
        return torch.exp(-0.5 * B).reshape(-1, 1), scalar_block(torch.sqrt(-torch.expm1(-B)))

    def sde_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        b = self.beta(t)
        return scalar_block(-0.5 * b), scalar_block(b)

    def transition_coeffs(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        dB = (self.beta_integral(t) - self.beta_integral(s)).clamp_min(0)
        return scalar_block(torch.exp(-0.5 * dB)), scalar_block(-torch.expm1(-dB))

    def prior_chol(self) -> Tensor:
        return torch.ones((1, 1), dtype=torch.float64)
