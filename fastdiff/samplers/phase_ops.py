"""Sub-steps of splitting integrators for PSLD (Pandey, Rudolph & Mandt 2024; SSCS from Dockhorn et al. 2022).

Reverse time runs from t down to t - h; delta is the integral of beta over that interval. With
Sigma_inf = diag(1, M) (per coordinate) the reverse-SDE drift -F z + G G^T score splits exactly as

    -F z + G G^T score = [-F z - G G^T Sigma_inf^{-1} z]  +  G G^T (score + Sigma_inf^{-1} z)
                       = (beta/2) K z                      +  beta (Gamma (s_x + x), M nu (s_m + M^-1 m)),

with K = [[-Gamma, -M^-1], [1, -nu]] (an OU with the stationary law N(0, Sigma_inf), used by SSCS). The
O/B/A split of the same drift, with lambda_s / lambda_m the noise levels on position / momentum (both 1: the
reverse SDE), per unit of integrated beta, is

    O: dx = -(lambda_s^2 Gamma / 2) x + lambda_s sqrt(Gamma) dw,   dm = -(lambda_m^2 nu / 2) m + lambda_m sqrt(M nu) dw'
    B: dm = x / 2 + ((1 + lambda_m^2) / 2) M nu (s_m + M^-1 m)
    A: dx = -M^-1 m / 2 + ((1 + lambda_s^2) / 2) Gamma (s_x + x),

which sums to -F z + diag((1 + lambda_s^2)/2, (1 + lambda_m^2)/2) G G^T score with noise diag(lambda_s, lambda_m) G:
a reverse process with the same marginals for every lambda >= 0 (lambda -> 0 gives the PF-ODE in that
coordinate). The PF-ODE split (no O) is B: dm = x/2 + (M nu / 2)(s_m + M^-1 m),
A: dx = -M^-1 m / 2 + (Gamma / 2)(s_x + x). All coefficients are formed in float64 (Python floats).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.base import Process, safe_cholesky2

# D = diag(1, -1): the reverse-time linear part is exp((b/2) K) = D exp((b/2) K_fwd) D (momentum flip)
_FLIP = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)


class PhaseSpaceOps:
    """The O, B, A, linear-OU and score-part sub-steps of the PSLD reverse SDE / PF-ODE (float64 coefficients)."""

    def __init__(self, process: Process, lambda_s: float = 1.0, lambda_m: float = 1.0) -> None:
        self.process = process
        self.gamma = float(process.gamma)
        self.nu = float(process.nu)
        self.m_inv = float(process.m_inv)
        self.mass = float(process.mass)
        self.lam2 = float(lambda_s) ** 2
        self.lam2_m = float(lambda_m) ** 2

    def delta(self, t_hi: Tensor | float, t_lo: Tensor | float) -> float:
        """Integrated beta over [t_lo, t_hi]."""
        t = torch.as_tensor([float(t_lo), float(t_hi)], dtype=torch.float64)
        b = self.process.beta_integral(t).reshape(-1)
        return float(b[1] - b[0])

    # ---- stochastic O/B/A split ------------------------------------------------------------------------
    def o_step(self, z: Tensor, delta: float, xi: Tensor) -> Tensor:
        """O: exact friction + noise OU over delta; leaves N(0, I) x N(0, M I) invariant for every lambda."""
        x, m = self.process.split(z)
        ex, em = self.process.split(xi)
        rx, rm = self.lam2 * self.gamma * delta, self.lam2_m * self.nu * delta
        ax, am = math.exp(-rx / 2), math.exp(-rm / 2)
        sx, sm = math.sqrt(-math.expm1(-rx)), math.sqrt(self.mass * -math.expm1(-rm))
        return self.process.join([ax * x + sx * ex, am * m + sm * em])

    def b_kick(self, z: Tensor, delta: float, score: Tensor, ode: bool = False) -> Tensor:
        """B: momentum update m += delta [x/2 + c M nu (s_m + M^-1 m)], c = (1 + lambda_m^2)/2 (SDE) or 1/2 (ODE)."""
        x, m = self.process.split(z)
        s_m = self.process.split(score)[1]
        c = (0.5 if ode else 0.5 * (1.0 + self.lam2_m)) * self.mass * self.nu
        return self.process.join([x, m + delta * (0.5 * x + c * (s_m + self.m_inv * m))])

    def a_drift(self, z: Tensor, delta: float, score: Tensor, ode: bool = False) -> Tensor:
        """A: position update x += delta [-M^-1 m/2 + c Gamma (s_x + x)], c = (1 + lambda^2)/2 (SDE) or 1/2 (ODE)."""
        x, m = self.process.split(z)
        s_x = self.process.split(score)[0]
        c = (0.5 if ode else 0.5 * (1.0 + self.lam2)) * self.gamma
        return self.process.join([x + delta * (-0.5 * self.m_inv * m + c * (s_x + x)), m])

    # ---- SSCS (symmetric splitting, Dockhorn et al. 2022) ----------------------------------------------
    def linear_coeffs(self, t_hi: Tensor | float, t_lo: Tensor | float) -> tuple[Tensor, Tensor]:
        """(E, C): the reverse-time OU dz = (beta/2) K z ds + G dw from t_hi down to t_lo is z <- E z + N(0, C).

        E = exp((b/2) K) = D A D and C = Sigma_inf - E Sigma_inf E^T = D Q D with (A, Q) the forward
        transition over the same interval and D = diag(1, -1) (K = D K_fwd D, D Sigma_inf D = Sigma_inf).
        """
        s = torch.as_tensor([float(t_lo)], dtype=torch.float64)
        t = torch.as_tensor([float(t_hi)], dtype=torch.float64)
        A, Q = self.process.transition_coeffs(s, t)
        return A * _FLIP, Q * _FLIP

    def linear_step(self, z: Tensor, t_hi: Tensor | float, t_lo: Tensor | float, xi: Tensor) -> Tensor:
        """Exact solution of the linear (OU) part of the reverse SDE over [t_lo, t_hi]."""
        E, C = self.linear_coeffs(t_hi, t_lo)
        l11, l21, l22 = safe_cholesky2(C[:, 0, 0], C[:, 0, 1], C[:, 1, 1])
        L = torch.stack([torch.stack([l11, torch.zeros_like(l11)], -1), torch.stack([l21, l22], -1)], -2)
        return self.process.apply(E.to(z.device), z) + self.process.apply(L.to(z.device), xi)

    def score_part(self, z: Tensor, delta: float, score: Tensor) -> Tensor:
        """Euler step of G G^T (score + Sigma_inf^{-1} z): x += delta Gamma (s_x + x), m += delta M nu (s_m + M^-1 m)."""
        x, m = self.process.split(z)
        s_x, s_m = self.process.split(score)
        return self.process.join([x + delta * self.gamma * (s_x + x),
                                  m + delta * self.mass * self.nu * (s_m + self.m_inv * m)])
