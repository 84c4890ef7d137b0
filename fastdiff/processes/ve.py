"""Variance-exploding SDE (Song et al. 2021): sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import PROCESSES
from .base import EDMView, scalar_block


@PROCESSES.register("ve")
@dataclass
class VE(EDMView):
    """VE SDE: f = 0, g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min)); kernel x0 + sigma(t) eps."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    t_eps_sample: float = 1e-5

    def __post_init__(self) -> None:
        rule = "VE needs 0 < sigma_min < sigma_max"
        if not self.sigma_min > 0:
            raise ValueError(f"sigma_min: {self.sigma_min!r} is out of range — {rule}")
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max: {self.sigma_max!r} is not above sigma_min={self.sigma_min!r} — {rule}")
        self.check_sample_time()
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(torch.as_tensor(t, dtype=torch.float64) * self._log_ratio)

    def scale(self, t: Tensor) -> Tensor:
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return torch.log(torch.as_tensor(sigma, dtype=torch.float64) / self.sigma_min) / self._log_ratio

    def sde_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        gg = self.sigma(t) ** 2 * (2 * self._log_ratio)
        return scalar_block(torch.zeros_like(gg)), scalar_block(gg)

    def transition_coeffs(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        q = (self.sigma(t) ** 2 - self.sigma(s) ** 2).clamp_min(0)
        return scalar_block(torch.ones_like(q)), scalar_block(q)

    def prior_chol(self) -> Tensor:
        return torch.full((1, 1), self.sigma_max, dtype=torch.float64)
