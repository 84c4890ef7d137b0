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
        g, nu, mi, M = self.gamma, self.nu, self.m_inv, self.mass
        h = self.beta / 2  # the SDE's constant drift matrix and G G^T
        self._F = torch.tensor([[-h * g, h * mi], [-h, -h * nu]], dtype=torch.float64)
        self._GG = torch.tensor([[self.beta * g, 0.0], [0.0, self.beta * M * nu]], dtype=torch.float64)
        # Coefficient rows of the kernel entries (_a_entries, _q_entries), so that all entries come from a few ops
        # on [N, 4] / [N, 2] tensors: the score wrapper forms the kernel on every network call, where the number
        # of small ops, not their arithmetic, is the cost. Each row holds a constant of the scalar formula divided
        # by 2 or 4, exact in binary: every entry is the float the scalar formula gives.
        self._a_rows = torch.tensor([[1.0, 0.0, 0.0, 1.0], [(nu - g) / 4, mi / 2, -0.5, (g - nu) / 4]],
                                    dtype=torch.float64)
        self._q_rows = torch.tensor([[1.0, M], [-mi / 2, -0.5], [(g - nu) / 2, M * (nu - g) / 2]], dtype=torch.float64)
        self._on_device: dict[torch.device, tuple[Tensor, ...]] = {}

    def _consts(self, device: torch.device) -> tuple[Tensor, ...]:
        """(a_rows, q_rows, F, GG) on ``device``, copied there once (not one host-to-device copy per call)."""
        if device not in self._on_device:
            self._on_device[device] = tuple(c.to(device) for c in (self._a_rows, self._q_rows, self._F, self._GG))
        return self._on_device[device]

    # b = int beta over [s, t] (constant beta)
    def beta_integral(self, t: Tensor) -> Tensor:
        return self.beta * torch.as_tensor(t, dtype=torch.float64)

    def _a_entries(self, b: Tensor) -> Tensor:
        """[N, 4] = (A00, A01, A10, A11) of the forward transition over integrated beta b [N]:
        e (1 + (nu - Gamma) b / 4, M^-1 b / 2, -b / 2, 1 + (Gamma - nu) b / 4), e = exp(-(Gamma + nu) b / 4)."""
        rows = self._consts(b.device)[0]
        e = torch.exp(b * (-(self.gamma + self.nu) / 4))
        return e[:, None] * (rows[0] + b[:, None] * rows[1])

    def _q_entries(self, b: Tensor) -> tuple[Tensor, Tensor]:
        """([N, 2] = (Qxx, Qmm), [N] = Qxm): covariance added over integrated beta b (the kernel table with
        Sxx0 = Smm0 = 0), S = exp(-(Gamma + nu) b / 2):
        Qxx = (1 - S) + S (-M^-1 b^2 / 2 + (Gamma - nu) b / 2), Qxm = S (nu - Gamma) b^2 / 4,
        Qmm = M (1 - S) + S (-b^2 / 2 + M (nu - Gamma) b / 2)."""
        rows = self._consts(b.device)[1]
        S = torch.exp(b * (-(self.gamma + self.nu) / 2))
        b2 = b**2
        diag = (1 - S)[:, None] * rows[0] + S[:, None] * (b2[:, None] * rows[1] + b[:, None] * rows[2])
        return diag, S * (self.nu - self.gamma) * b2 / 4

    def _A(self, b: Tensor) -> Tensor:
        return self._a_entries(b).reshape(-1, 2, 2)

    def _Q(self, b: Tensor) -> Tensor:
        diag, sxm = self._q_entries(b)
        return _mat2(diag[:, 0], sxm, sxm, diag[:, 1])

    def sde_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        n = t.shape[0]
        F, GG = self._consts(t.device)[2:]
        return F.expand(n, 2, 2), GG.expand(n, 2, 2)

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
        A = self._a_entries(b)
        qd, qxm = self._q_entries(b)
        col = A[:, 1::2]  # (A01, A11)
        p = col * (self.kappa * self.mass)
        sd = (p * col + qd) + 1e-9  # (Sxx, Smm)
        return A[:, 0], A[:, 2], sd[:, 0], p[:, 0] * A[:, 3] + qxm, sd[:, 1]

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a_x, a_m, sxx, sxm, smm = self._kernel_entries(t)
        l11, l21, l22 = safe_cholesky2(sxx, sxm, smm)
        return torch.stack([a_x, a_m], -1), _mat2(l11, torch.zeros_like(l11), l21, l22)

    def log_snr(self, t: Tensor | float) -> Tensor:
        """The base class's log(a_x^2 / L_xx^2) without the rest of the factor (the time grids' inversions call this
        on every run)."""
        a_x, _, sxx, _, _ = self._kernel_entries(torch.as_tensor(t, dtype=torch.float64))
        return torch.log(a_x**2) - torch.log(sxx.clamp_min(0).sqrt() ** 2)

    def prior_chol(self) -> Tensor:
        return torch.diag(torch.tensor([1.0, self.mass ** 0.5], dtype=torch.float64))

    def initial_aux_var(self) -> float:
        return self.kappa * self.mass


def _mat2(m00: Tensor, m01: Tensor, m10: Tensor, m11: Tensor) -> Tensor:
    """[N, 2, 2] from four [N] entries."""
    return torch.stack([m00, m01, m10, m11], -1).reshape(-1, 2, 2)
