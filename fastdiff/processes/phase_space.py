"""Phase-space processes (data x coupled to a momentum m) and the sub-steps of their reverse SDE / PF-ODE.

A phase-space process is, per coordinate, dx = (beta/2)(M^-1 m - Gamma x) dt + sqrt(Gamma beta) dw_x,
dm = (beta/2)(-x - nu m) dt + sqrt(M nu beta) dw_m (PSLD; CLD is Gamma = 0). Splitting samplers (Pandey, Rudolph &
Mandt 2024; SSCS from Dockhorn et al. 2022) integrate its reverse SDE in pieces; the process owns those pieces so the
samplers never read its internals. Reverse time runs from t down to t - h; delta = integral of beta over the step.
Per unit of delta the reverse SDE (time running down, s = score) is

    dx = [(Gamma x - M^-1 m) / 2 + Gamma s_x] + sqrt(Gamma) dw,     dm = [(x + nu m) / 2 + M nu s_m] + sqrt(M nu) dw'.

Its lambda family (noise scaled by lambda on a coordinate, drift term of the score by (1 + lambda^2) / 2) has the
same marginals for every lambda >= 0 (Fokker-Planck: the extra diffusion (lambda^2 - 1) G G^T / 2 is cancelled by
the extra score drift (lambda^2 - 1) G G^T s / 2); lambda = 0 is the PF-ODE in that coordinate. Each building
block below is a piece of one such drift; a split is valid when its pieces sum to the family's drift and noise.
All coefficients are formed in float64 (Python floats).
"""
from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from .base import Process, block_cholesky

# D = diag(1, -1): the reverse-time linear part is exp((b/2) K) = D exp((b/2) K_fwd) D (momentum flip)
_FLIP = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)


class PhaseSpaceProcess(Process):
    """Base of processes with state (x, m): the kernels come from the subclass, the splitting sub-steps from here."""

    k = 2
    augmented = True
    capabilities: ClassVar[frozenset[str]] = frozenset({"phase_space"})
    gamma: float  # position friction Gamma
    nu: float  # momentum friction
    m_inv: float  # M^-1
    mass: float  # M

    @abstractmethod
    def beta_integral(self, t: Tensor) -> Tensor:
        """Integral of beta over [0, t] (float64)."""

    def delta(self, t_hi: Tensor | float, t_lo: Tensor | float) -> float:
        """Integrated beta over [t_lo, t_hi]."""
        b = self.beta_integral(torch.as_tensor([float(t_lo), float(t_hi)], dtype=torch.float64)).reshape(-1)
        return float(b[1] - b[0])

    # ---- O: exact Ornstein-Uhlenbeck pieces ------------------------------------------------------------
    def o_friction(self, z: Tensor, delta: float, xi: Tensor, lambda_s: float = 1.0, lambda_m: float = 1.0) -> Tensor:
        """Friction + noise OU over delta, exact: dx = -(lam_s^2 Gamma/2) x + lam_s sqrt(Gamma) dw (m: nu, M, lam_m).

        Leaves N(0, 1) x N(0, M) invariant for every lambda (the prior is its stationary law).
        """
        x, m = self.split(z)
        ex, em = self.split(xi)
        rx, rm = lambda_s**2 * self.gamma * delta, lambda_m**2 * self.nu * delta
        sx, sm = math.sqrt(-math.expm1(-rx)), math.sqrt(self.mass * -math.expm1(-rm))
        return self.join([math.exp(-rx / 2) * x + sx * ex, math.exp(-rm / 2) * m + sm * em])

    def o_momentum(self, z: Tensor, delta: float, xi: Tensor) -> Tensor:
        """The momentum's own linear part of the reverse SDE alone, exact: dm = (nu/2) m + sqrt(M nu) dw'.

        In reverse time it expands: m <- e^{nu delta / 2} m + sqrt(M (e^{nu delta} - 1)) xi_m; x is untouched
        (only the momentum half of ``xi`` is used).
        """
        x, m = self.split(z)
        em = self.split(xi)[1]
        r = self.nu * delta
        return self.join([x, math.exp(r / 2) * m + math.sqrt(self.mass * math.expm1(r)) * em])

    # ---- B and A: Euler pieces that use the score -------------------------------------------------------
    def kick_momentum(self, z: Tensor, delta: float, score: Tensor, w_score: float, w_m: float) -> Tensor:
        """B: m += delta [x/2 + w_score M nu s_m + w_m nu m] (x untouched)."""
        x, m = self.split(z)
        s_m = self.split(score)[1]
        return self.join([x, m + delta * (0.5 * x + w_score * self.mass * self.nu * s_m + w_m * self.nu * m)])

    def drift_position(self, z: Tensor, delta: float, score: Tensor, w_score: float, w_x: float,
                       noise: float = 0.0, xi: Tensor | None = None) -> Tensor:
        """A: x += delta [-M^-1 m/2 + w_score Gamma s_x + w_x Gamma x] + noise sqrt(Gamma delta) xi_x (m untouched)."""
        x, m = self.split(z)
        s_x = self.split(score)[0]
        x = x + delta * (-0.5 * self.m_inv * m + w_score * self.gamma * s_x + w_x * self.gamma * x)
        if noise:
            x = x + noise * math.sqrt(self.gamma * delta) * self.split(xi)[0]
        return self.join([x, m])

    # ---- SSCS pieces (Dockhorn et al. 2022) ------------------------------------------------------------
    def linear_coeffs(self, t_hi: Tensor | float, t_lo: Tensor | float) -> tuple[Tensor, Tensor]:
        """(E, C): the reverse-time OU dz = (beta/2) K z ds + G dw from t_hi down to t_lo is z <- E z + N(0, C).

        K = [[-Gamma, -M^-1], [1, -nu]] (the reverse drift minus its score part G G^T (s + Sigma_inf^-1 z)).
        E = exp((b/2) K) = D A D and C = Sigma_inf - E Sigma_inf E^T = D Q D with (A, Q) the forward
        transition over the same interval and D = diag(1, -1) (K = D K_fwd D, D Sigma_inf D = Sigma_inf).
        t_hi, t_lo: numbers or [N] tensors (N intervals, [N, 2, 2] each).
        """
        t_hi, t_lo = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (t_hi, t_lo))
        A, Q = self.transition_coeffs(t_lo, t_hi)
        flip = _FLIP.to(A.device)
        return A * flip, Q * flip

    def linear_kernels(self, t_hi: Tensor | float, t_lo: Tensor | float) -> tuple[Tensor, Tensor]:
        """(E, chol C) of :meth:`linear_step`, for [N] intervals at once (a sampler forms a whole grid's once)."""
        E, C = self.linear_coeffs(t_hi, t_lo)
        return E, block_cholesky(C)

    def apply_linear(self, z: Tensor, kernels: tuple[Tensor, Tensor], i: int, xi: Tensor) -> Tensor:
        """The exact linear step with interval ``i`` of :meth:`linear_kernels`: E z + chol(C) xi."""
        E, R = kernels
        return self.apply(E[i:i + 1].to(z.device), z) + self.apply(R[i:i + 1].to(z.device), xi)

    def linear_step(self, z: Tensor, t_hi: Tensor | float, t_lo: Tensor | float, xi: Tensor) -> Tensor:
        """Exact solution of the linear (OU) part of the reverse SDE over [t_lo, t_hi]."""
        return self.apply_linear(z, self.linear_kernels(t_hi, t_lo), 0, xi)

    def deltas(self, ts: Tensor) -> list[float]:
        """Integrated beta over each step of a decreasing grid ts: [delta(ts[i], ts[i+1]) for every i]."""
        b = self.beta_integral(torch.as_tensor(ts, dtype=torch.float64).reshape(-1).cpu())
        return (b[:-1] - b[1:]).tolist()

    def score_part(self, z: Tensor, delta: float, score: Tensor) -> Tensor:
        """Euler step of G G^T (score + Sigma_inf^-1 z): x += delta Gamma (s_x + x), m += delta M nu (s_m + M^-1 m)."""
        x, m = self.split(z)
        s_x, s_m = self.split(score)
        return self.join([x + delta * self.gamma * (s_x + x), m + delta * self.mass * self.nu * (s_m + self.m_inv * m)])
