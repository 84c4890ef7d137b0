"""Step coefficients of exponential integrators for any linear process (k = 1 or 2 per-coordinate blocks).

Facts used (gDDIM, Zhang, Tao & Chen, ICLR 2023; conjugate integrators, Pandey, Rudolph & Mandt, ICLR 2024):
the PF-ODE dz/du = F z - 1/2 GG^T score is semi-linear. Given x0, z_u ~ N(a_u x0, Sigma_u) with
Sigma' = F Sigma + Sigma F^T + GG^T, and the PF-ODE of a point mass maps z_u - a_u x0 by the flow of
J(u) = F + 1/2 GG^T Sigma_u^{-1}. That flow has the closed form Psi(t', t) = R_{t'} R_t^{-1} with the *flow frame*

    R_u = L_u Rot(theta_u),   theta' = omega(u) = -(X_01 + 1/2 Gt_01),  X = L^-1 F L,  Gt = L^-1 GG^T L^-T,

(L the Cholesky factor of Sigma; w = L^-1 y obeys w' = K w with K skew, so w only rotates; k = 1: R = L).
Writing score = -R^{-T} eps_R, the ODE is dz/du = F z + dP/du eps_R with P(u) = Phi(t', u) R_u (Phi the
transition of F), and eps_R is constant along the flow of a point mass: holding it constant over a step is exact
there (DDIM on VP/VE; the gDDIM step on PSLD). In data-prediction form, score = -Sigma^-1 (z - a D), the ODE is
dz/du = J z + dQ/du D with Q(u) = Psi(t', u) a_u. A multistep (Adams-type) step interpolates eps_R (or D) by a
polynomial l(tau) in tau = log-SNR (or t) through the last p evaluations and integrates against dP (or dQ)
exactly up to quadrature: int_t^{t'} dP l = P l |_t^{t'} + int_{t'}^t P l'(tau) tau'(u) du (by parts: P is
bounded, dP/du is not, as u -> 0). Everything is float64 and depends only on the grid, so it is computed once per run.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..processes.base import Process, safe_cholesky2

_GL_NODES = 24  # Gauss-Legendre nodes per interval (in log u); the tests check the weights to 1e-9


def _gl(n: int) -> tuple[Tensor, Tensor]:
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(x), torch.from_numpy(w)


def _rot(theta: Tensor) -> Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


class FlowFrame:
    """The flow frame R_u, the transitions Phi / Psi and the multistep weights of one process on one grid."""

    def __init__(self, process: Process, tau: str = "logsnr", nodes: int = _GL_NODES) -> None:
        if process.k not in (1, 2):
            raise ValueError(f"exponential integrators support per-coordinate blocks of size 1 or 2, got {process.k}")
        self.process, self.k, self.tau_kind = process, process.k, tau
        self.x, self.w = _gl(nodes)

    # ---- pointwise quantities (u: [N] float64) ------------------------------------------------------------
    def omega(self, u: Tensor) -> Tensor:
        """Rotation rate of the flow frame (0 for k = 1)."""
        if self.k == 1:
            return torch.zeros_like(u)
        F, GG = self.process.sde_coeffs(u)
        _, L = self.process.marginal_coeffs(u)
        Li = torch.linalg.inv(L)
        X = Li @ F @ L
        Gt = Li @ GG @ Li.transpose(-1, -2)
        return -(X[:, 0, 1] + 0.5 * Gt[:, 0, 1])

    def angle(self, lo: Tensor, hi: Tensor) -> Tensor:
        """int_lo^hi omega du (elementwise, lo, hi > 0), Gauss-Legendre in log u."""
        if self.k == 1:
            return torch.zeros_like(lo)
        a, b = torch.log(lo), torch.log(hi)
        v = 0.5 * (a + b)[:, None] + 0.5 * (b - a)[:, None] * self.x[None]  # [N, n]
        u = torch.exp(v)
        f = self.omega(u.reshape(-1)).reshape(u.shape) * u
        return 0.5 * (b - a) * (f * self.w[None]).sum(-1)

    def tau(self, u: Tensor) -> Tensor:
        """Interpolation variable: log-SNR of the data coordinate, or t."""
        return self.process.log_snr(u) if self.tau_kind == "logsnr" else u.clone()

    def dtau(self, u: Tensor) -> Tensor:
        """d tau / du by autograd (log_snr is made of torch ops)."""
        if self.tau_kind != "logsnr":
            return torch.ones_like(u)
        with torch.enable_grad():
            uu = u.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.process.log_snr(uu).sum(), uu)
        return g.detach()

    def frame(self, u: Tensor, theta: Tensor) -> Tensor:
        """R_u = L_u Rot(theta_u), [N, k, k]."""
        _, L = self.process.marginal_coeffs(u)
        return L if self.k == 1 else L @ _rot(theta)

    def phi(self, t_to: Tensor, t_from: Tensor) -> Tensor:
        """Transition matrix of dz/du = F z from t_from to t_to (t_to <= t_from), [N, k, k]."""
        A, _ = self.process.transition_coeffs(t_to, t_from)  # z_from = A z_to + noise
        return torch.linalg.inv(A)

    # ---- per-step coefficients ----------------------------------------------------------------------------
    def thetas(self, ts: Tensor) -> Tensor:
        """theta at every grid point, theta(ts[0]) = 0 (the frame is defined up to one constant rotation)."""
        inc = self.angle(ts[1:], ts[:-1])  # grid decreasing: angle from t_{i+1} up to t_i
        return torch.cat([torch.zeros(1, dtype=ts.dtype), -torch.cumsum(inc, 0)])

    def weights(self, ts: Tensor, i: int, hist: list[int], theta: Tensor, form: str) -> tuple[Tensor, list[Tensor]]:
        """(M, [W_j]) for the step ts[i] -> ts[i+1]: z' = M z + sum_j W_j v_j (+ noise for "sde_data").

        v_j is eps_R ("ode_eps", W_j [k, k]) or the denoised data D ("ode_data", "sde_data", W_j [k, 1]) at
        ts[hist[j]], hist[0] = i. M = Phi (ode_eps), Psi = R_t' R_t^-1 (ode_data) or the reverse-SDE bridge
        Psi2 = Sigma_t' Phi(t, t')^T Sigma_t^-1 (sde_data); the kernel K(u) (P, Q or Q2 of the module doc) obeys
        K(t') = end_n, K(t) = end_t and the step is int_t^{t'} dK(u) v(u).
        """
        t, tn = ts[i:i + 1], ts[i + 1:i + 2]
        a, b = math.log(float(tn)), math.log(float(t))
        u = torch.exp(0.5 * (a + b) + 0.5 * (b - a) * self.x)  # Gauss-Legendre nodes on [t', t] in log u
        a_n = self.process.marginal_coeffs(tn)[0][0][:, None]
        a_t = self.process.marginal_coeffs(t)[0][0][:, None]
        a_u = self.process.marginal_coeffs(u)[0][:, :, None]
        if form == "sde_data":
            S_n, S_t, S_u = self._cov(tn)[0], self._cov(t)[0], self._cov(u)
            A_back = self.process.transition_coeffs(tn, t)[0][0]  # Phi(t, t')
            M = S_n @ A_back.T @ torch.linalg.inv(S_t)
            A_u = self.process.transition_coeffs(tn.expand_as(u), u)[0]  # Phi(u, t')
            kern = S_n @ A_u.transpose(-1, -2) @ torch.linalg.solve(S_u, a_u)
            end_n, end_t = a_n, M @ a_t
        else:
            Rn = self.frame(tn, theta[i + 1:i + 2])[0]
            Rt = self.frame(t, theta[i:i + 1])[0]
            Ru = self.frame(u, theta[i + 1] + self.angle(tn.expand_as(u), u))
            if form == "ode_data":
                M = Rn @ torch.linalg.inv(Rt)
                kern = Rn @ torch.linalg.solve(Ru, a_u)  # Q(u) = Psi(t', u) a_u
                end_n, end_t = a_n, M @ a_t
            elif form == "ode_eps":
                M = self.phi(tn, t)[0]
                kern = self.phi(tn.expand_as(u), u) @ Ru  # P(u) = Phi(t', u) R_u
                end_n, end_t = Rn, M @ Rt
            else:
                raise ValueError(f"unknown form {form!r}; allowed: ode_eps, ode_data, sde_data")
        taus = self.tau(ts[hist])
        dv = self.dtau(u) * u * 0.5 * (b - a) * self.w  # d tau/du * du/dx * GL weight
        tau_u, tau_n = self.tau(u), self.tau(tn)
        out = []
        for j in range(len(hist)):
            lj, dlj = _lagrange(taus, j)
            val = end_n * lj(tau_n)[0] - end_t * lj(taus[:1])[0]
            out.append(val + (kern * (dlj(tau_u) * dv)[:, None, None]).sum(0))
        return M, out

    def _cov(self, u: Tensor) -> Tensor:
        _, L = self.process.marginal_coeffs(u)
        return L @ L.transpose(-1, -2)

    def bridge_noise(self, t: Tensor, tn: Tensor) -> Tensor:
        """Lower Cholesky [k, k] of Cov(z_t' | z_t, x0) = Sigma_t' - Psi2 Phi(t, t') Sigma_t' (the exact reverse-SDE noise)."""
        S_n, S_t = self._cov(tn.reshape(1))[0], self._cov(t.reshape(1))[0]
        A_back = self.process.transition_coeffs(tn.reshape(1), t.reshape(1))[0][0]
        C = S_n - S_n @ A_back.T @ torch.linalg.solve(S_t, A_back @ S_n)
        C = 0.5 * (C + C.T)
        if self.k == 1:
            return C.clamp_min(0).sqrt()
        l11, l21, l22 = safe_cholesky2(C[0, 0], C[0, 1], C[1, 1])
        return torch.stack([torch.stack([l11, torch.zeros_like(l11)]), torch.stack([l21, l22])])


def _lagrange(nodes: Tensor, j: int) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """The j-th Lagrange basis polynomial through ``nodes`` and its derivative."""
    others = [nodes[m] for m in range(len(nodes)) if m != j]
    denom = torch.prod(torch.stack([nodes[j] - o for o in others])) if others else torch.tensor(1.0, dtype=nodes.dtype)

    def val(x: Tensor) -> Tensor:
        out = torch.ones_like(x)
        for o in others:
            out = out * (x - o)
        return out / denom

    def der(x: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        for m in range(len(others)):
            term = torch.ones_like(x)
            for q, o in enumerate(others):
                if q != m:
                    term = term * (x - o)
            out = out + term
        return out / denom

    return val, der
