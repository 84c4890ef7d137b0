"""Phase space Langevin diffusion (Pandey & Mandt 2023): data x coupled to momentum m, critically damped."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import PROCESSES
from .base import safe_cholesky2
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

    # The kernels below are formed entry by entry as [N] float64 tensors and stacked once: the score wrapper
    # evaluates them on every network call, where the number of small ops, not their arithmetic, is the cost.
    def _a_entries(self, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(A00, A01, A10, A11) of the forward transition over integrated beta b."""
        g, nu, mi = self.gamma, self.nu, self.m_inv
        e = torch.exp(-(g + nu) * b / 4)
        return e * (1 + (nu - g) * b / 4), e * (mi * b / 2), e * (-b / 2), e * (1 + (g - nu) * b / 4)

    def _q_entries(self, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(Qxx, Qxm, Qmm): covariance added over integrated beta b (the kernel table with Sxx0 = Smm0 = 0)."""
        g, nu, mi, M = self.gamma, self.nu, self.m_inv, self.mass
        S = torch.exp(-(g + nu) * b / 2)
        b2 = b**2
        sxx = (1 - S) + S * (-mi * b2 / 2 + (g - nu) * b / 2)
        sxm = S * (nu - g) * b2 / 4
        smm = M * (1 - S) + S * (-b2 / 2 + M * (nu - g) * b / 2)
        return sxx, sxm, smm

    def _A(self, b: Tensor) -> Tensor:
        return _mat2(*self._a_entries(b))

    def _Q(self, b: Tensor) -> Tensor:
        sxx, sxm, smm = self._q_entries(b)
        return _mat2(sxx, sxm, sxm, smm)

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

    def _kernel_entries(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(a_x, a_m, Sxx, Sxm, Smm) of the HSM kernel (x0, m0 ~ N(0, kappa M)) at times t, float64 [N] each.

        Mean a = A[:, 0]; covariance A diag(0, kappa M) A^T + Q + 1e-9 I = Q + kappa M A[:, 1] A[:, 1]^T + 1e-9 I,
        its products formed in the order ``marginal_cov``'s matrix products form them (the same floats).
        """
        b = self.beta_integral(torch.as_tensor(t, dtype=torch.float64).reshape(-1))
        a00, a01, a10, a11 = self._a_entries(b)
        sxx, sxm, smm = self._q_entries(b)
        p0, p1 = a01 * (self.kappa * self.mass), a11 * (self.kappa * self.mass)
        return a00, a10, (p0 * a01 + sxx) + 1e-9, p0 * a11 + sxm, (p1 * a11 + smm) + 1e-9

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a_x, a_m, sxx, sxm, smm = self._kernel_entries(t)
        l11, l21, l22 = safe_cholesky2(sxx, sxm, smm)
        return torch.stack([a_x, a_m], -1), _mat2(l11, torch.zeros_like(l11), l21, l22)

    def log_snr(self, t: Tensor | float) -> Tensor:
        """The base class's log(a_x^2 / L_xx^2) without the rest of the factor (the time grids' bisections call this
        some 60 times per grid)."""
        a_x, _, sxx, _, _ = self._kernel_entries(torch.as_tensor(t, dtype=torch.float64))
        return torch.log(a_x**2) - torch.log(sxx.clamp_min(0).sqrt() ** 2)

    def prior_chol(self) -> Tensor:
        return torch.diag(torch.tensor([1.0, self.mass ** 0.5], dtype=torch.float64))

    def initial_aux_var(self) -> float:
        return self.kappa * self.mass


def _mat2(m00: Tensor, m01: Tensor, m10: Tensor, m11: Tensor) -> Tensor:
    """[N, 2, 2] from four [N] entries."""
    return torch.stack([m00, m01, m10, m11], -1).reshape(-1, 2, 2)
