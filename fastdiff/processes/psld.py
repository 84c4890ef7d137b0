"""Phase space Langevin diffusion (Pandey & Mandt 2023): data x coupled to momentum m, critically damped."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import PROCESSES
from .base import block_cholesky
from .phase_space import PhaseSpaceProcess


@PROCESSES.register("psld")
@dataclass
class PSLD(PhaseSpaceProcess):
    """PSLD: dx = (beta/2)(M^-1 m - Gamma x) dt + sqrt(Gamma beta) dw_x, dm = (beta/2)(-x - nu m) dt + sqrt(M nu beta) dw_m.

    ``gamma`` is Gamma (position friction), ``kappa`` the initial momentum variance factor (m0 ~ N(0, kappa M));
    ``nu`` defaults to Gamma + 4; M^-1 = (Gamma - nu)^2 / 4 (critical damping). CLD is ``gamma=0``.
    """

    beta: float = 8.0
    gamma: float = 0.01
    nu: float | None = None
    kappa: float = 0.04
    t_eps_sample: float = 1e-3

    def __post_init__(self) -> None:
        if self.nu is None:
            self.nu = self.gamma + 4.0
        rule = "PSLD needs beta > 0, 0 <= gamma < nu (gamma = 0 is CLD), kappa > 0"
        for key, ok in (("beta", self.beta > 0), ("gamma", self.gamma >= 0), ("kappa", self.kappa > 0)):
            if not ok:
                raise ValueError(f"{key}: {getattr(self, key)!r} is out of range — {rule}")
        if not self.nu > self.gamma:
            raise ValueError(f"nu: {self.nu!r} is not above gamma={self.gamma!r} — {rule}")
        self.check_sample_time()
        self.m_inv = (self.gamma - self.nu) ** 2 / 4.0
        self.mass = 1.0 / self.m_inv

    # b = int beta over [s, t] (constant beta)
    def beta_integral(self, t: Tensor) -> Tensor:
        return self.beta * torch.as_tensor(t, dtype=torch.float64)

    def _A(self, b: Tensor) -> Tensor:
        g, nu, mi = self.gamma, self.nu, self.m_inv
        e = torch.exp(-(g + nu) * b / 4)
        row0 = torch.stack([1 + (nu - g) * b / 4, mi * b / 2], -1)
        row1 = torch.stack([-b / 2, 1 + (g - nu) * b / 4], -1)
        return e[:, None, None] * torch.stack([row0, row1], -2)

    def _Q(self, b: Tensor) -> Tensor:
        """Covariance added over an interval with integrated beta b (the kernel table with Sxx0 = Smm0 = 0)."""
        g, nu, mi, M = self.gamma, self.nu, self.m_inv, self.mass
        S = torch.exp(-(g + nu) * b / 2)
        sxx = (1 - S) + S * (-mi * b**2 / 2 + (g - nu) * b / 2)
        sxm = S * (nu - g) * b**2 / 4
        smm = M * (1 - S) + S * (-(b**2) / 2 + M * (nu - g) * b / 2)
        return torch.stack([torch.stack([sxx, sxm], -1), torch.stack([sxm, smm], -1)], -2)

    def sde_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        h = self.beta / 2
        F = torch.tensor([[-h * self.gamma, h * self.m_inv], [-h, -h * self.nu]], dtype=torch.float64)
        GG = torch.tensor([[self.beta * self.gamma, 0.0], [0.0, self.beta * self.mass * self.nu]], dtype=torch.float64)
        n = t.shape[0]
        return F.to(t.device).expand(n, 2, 2), GG.to(t.device).expand(n, 2, 2)

    def transition_coeffs(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        b = (self.beta_integral(t) - self.beta_integral(s)).clamp_min(0).reshape(-1)
        return self._A(b), self._Q(b)

    def marginal_cov(self, t: Tensor, sxx0: float = 0.0, smm0: float | None = None) -> Tensor:
        """Covariance [B, 2, 2] of z_t given x0 for initial variances (sxx0, smm0); default is HSM (0, kappa M)."""
        smm0 = self.kappa * self.mass if smm0 is None else smm0
        b = self.beta_integral(t).reshape(-1)
        A, Q = self._A(b), self._Q(b)
        init = torch.diag(torch.tensor([sxx0, smm0], dtype=torch.float64, device=b.device))
        return A @ init @ A.transpose(-1, -2) + Q + 1e-9 * torch.eye(2, dtype=torch.float64, device=b.device)

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        L = block_cholesky(self.marginal_cov(t))
        a = self._A(self.beta_integral(t))[:, :, 0]  # mean uses m0 = 0: only the x0 column
        return a, L

    def prior_chol(self) -> Tensor:
        return torch.diag(torch.tensor([1.0, self.mass ** 0.5], dtype=torch.float64))

    def initial_aux_var(self) -> float:
        return self.kappa * self.mass
