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

from dataclasses import dataclass

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

    def coefficients(self, ts: Tensor, order: int, form: str) -> "StepCoeffs":
        """All steps ts[i] -> ts[i+1] at once: z' = M_i z + sum_j W_ij v_(i-j) (+ noise_i xi for "sde_data").

        v is eps_R ("ode_eps", W [k, k]) or the denoised data D ("ode_data", "sde_data", W [k, 1]); step i uses
        p_i = min(order, i + 1) values (lower order while the history fills), W_ij = 0 for j >= p_i. M = Phi
        (ode_eps), Psi = R_t' R_t^-1 (ode_data) or the reverse-SDE bridge Psi2 = Sigma_t' Phi(t, t')^T Sigma_t^-1
        (sde_data); the kernel K(u) (P, Q or Q2 of the module doc) has K(t') = end_n, K(t) = end_t and the step is
        int_t^{t'} dK(u) v(u). Vectorised over steps and Gauss-Legendre nodes (a few ms per grid).
        """
        ts = ts.to(torch.float64).cpu()
        S, n, k = len(ts) - 1, len(self.x), self.k
        t, tn = ts[:-1], ts[1:]
        lo, hi = torch.log(tn), torch.log(t)
        half = 0.5 * (hi - lo)  # [S]
        u = torch.exp((0.5 * (lo + hi))[:, None] + half[:, None] * self.x[None])  # [S, n] nodes on [t', t], log u
        uf = u.reshape(-1)
        a_n = self.process.marginal_coeffs(tn)[0][:, :, None]  # [S, k, 1]
        a_t = self.process.marginal_coeffs(t)[0][:, :, None]
        a_u = self.process.marginal_coeffs(uf)[0][:, :, None].reshape(S, n, k, 1)
        if form == "sde_data":
            S_n, S_t, S_u = self._cov(tn), self._cov(t), self._cov(uf).reshape(S, n, k, k)
            A_back = self.process.transition_coeffs(tn, t)[0]  # Phi(t, t')
            M = S_n @ A_back.transpose(-1, -2) @ torch.linalg.inv(S_t)
            A_u = self.process.transition_coeffs(tn[:, None].expand(S, n).reshape(-1), uf)[0].reshape(S, n, k, k)
            kern = S_n[:, None] @ A_u.transpose(-1, -2) @ torch.linalg.solve(S_u, a_u)  # Q2(u)
            end_n, end_t = a_n, M @ a_t
            # the same order-1 step in score form (a_t D = z + Sigma_t score):
            # z' = Phi z + (Phi Sigma_t - Psi2 Sigma_t) s
            Phi = self.phi(tn, t)
            extra = (Phi, Phi @ S_t - S_n @ A_back.transpose(-1, -2))
        elif form in ("ode_eps", "ode_data"):
            theta = self.thetas(ts)
            th_u = theta[1:, None] + self.angle(tn[:, None].expand(S, n).reshape(-1), uf).reshape(S, n)
            Rn, Rt = self.frame(tn, theta[1:]), self.frame(t, theta[:-1])
            Ru = self.frame(uf, th_u.reshape(-1)).reshape(S, n, k, k)
            if form == "ode_data":
                M = Rn @ torch.linalg.inv(Rt)
                kern = Rn[:, None] @ torch.linalg.solve(Ru, a_u)  # Q(u) = Psi(t', u) a_u
                end_n, end_t = a_n, M @ a_t
            else:
                M = self.phi(tn, t)
                Pu = self.phi(tn[:, None].expand(S, n).reshape(-1), uf).reshape(S, n, k, k)
                kern = Pu @ Ru  # P(u) = Phi(t', u) R_u
                end_n, end_t = Rn, M @ Rt
        else:
            raise ValueError(f"unknown form {form!r}; allowed: ode_eps, ode_data, sde_data")
        tau_g, tau_u = self.tau(ts), self.tau(uf).reshape(S, n)
        dv = self.dtau(uf).reshape(S, n) * u * half[:, None] * self.w[None]  # d tau/du * du/dx * GL weight
        c = kern.shape[-1]
        W = torch.zeros(S, order, k, c, dtype=torch.float64)
        p_of = torch.clamp(torch.arange(S) + 1, max=order)
        for p in range(1, order + 1):
            rows = (p_of == p).nonzero().flatten()
            if len(rows) == 0:
                continue
            nodes = torch.stack([tau_g[rows - j] for j in range(p)], -1)  # [S', p]: tau at t_i, t_{i-1}, ...
            for j in range(p):
                at_n = _lagrange(nodes, j, tau_g[rows + 1][:, None])[0][:, 0]
                at_t = _lagrange(nodes, j, nodes[:, :1])[0][:, 0]
                der = _lagrange(nodes, j, tau_u[rows])[1]  # [S', n]
                quad = (kern[rows] * (der * dv[rows])[:, :, None, None]).sum(1)
                W[rows, j] = end_n[rows] * at_n[:, None, None] - end_t[rows] * at_t[:, None, None] + quad
        if form != "sde_data":
            return StepCoeffs(M, W, p_of, R=self.frame(ts, theta))
        return StepCoeffs(M, W, p_of, self.bridge_noise(t, tn), *extra)

    def _cov(self, u: Tensor) -> Tensor:
        _, L = self.process.marginal_coeffs(u)
        return L @ L.transpose(-1, -2)

    def bridge_noise(self, t: Tensor, tn: Tensor) -> Tensor:
        """Lower Cholesky [S, k, k] of Cov(z_t' | z_t, x0) = Sigma_t' - Psi2 Phi(t, t') Sigma_t' (the exact noise)."""
        S_n, S_t = self._cov(tn), self._cov(t)
        A_back = self.process.transition_coeffs(tn, t)[0]
        C = S_n - S_n @ A_back.transpose(-1, -2) @ torch.linalg.solve(S_t, A_back @ S_n)
        C = 0.5 * (C + C.transpose(-1, -2))
        if self.k == 1:
            return C.clamp_min(0).sqrt()
        l11, l21, l22 = safe_cholesky2(C[:, 0, 0], C[:, 0, 1], C[:, 1, 1])
        zero = torch.zeros_like(l11)
        return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)


@dataclass
class StepCoeffs:
    """Per-step coefficients: M [S, k, k], W [S, order, k, c], the order used per step [S]; for the SDE also the
    bridge noise factor [S, k, k] and the order-1 score-form pair (M_eps, W_eps), each [S, k, k]; for the ODE the
    flow frame at the grid points."""

    M: Tensor
    W: Tensor
    orders: Tensor
    noise: Tensor | None = None
    M_eps: Tensor | None = None
    W_eps: Tensor | None = None
    R: Tensor | None = None  # the flow frame at the grid points [S + 1, k, k] (ODE forms)


def _lagrange(nodes: Tensor, j: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """Value and derivative at x [S', m] of the j-th Lagrange basis polynomial through each row of nodes [S', p]."""
    p = nodes.shape[1]
    others = [m for m in range(p) if m != j]
    denom = torch.ones(nodes.shape[0], 1, dtype=nodes.dtype)
    for m in others:
        denom = denom * (nodes[:, j:j + 1] - nodes[:, m:m + 1])
    val = torch.ones_like(x)
    for m in others:
        val = val * (x - nodes[:, m:m + 1])
    der = torch.zeros_like(x)
    for m in others:
        term = torch.ones_like(x)
        for q in others:
            if q != m:
                term = term * (x - nodes[:, q:q + 1])
        der = der + term
    return val / denom, der / denom


_CACHE: dict[tuple, StepCoeffs] = {}


def step_coefficients(process: Process, ts: Tensor, order: int, form: str, tau: str = "logsnr") -> StepCoeffs:
    """:meth:`FlowFrame.coefficients`, memoised on (process config, grid, order, form, tau): they depend on nothing
    else, so repeated batches (sample.py, validation callbacks) pay for them once."""
    key = (repr(sorted(process.config().items())), tuple(ts.tolist()), order, form, tau)
    if key not in _CACHE:
        if len(_CACHE) >= 64:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = FlowFrame(process, tau).coefficients(ts, order, form)
    return _CACHE[key]


def eta_coefficients(process: Process, ts: Tensor, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Order-1 reverse steps with noise scale eta (gDDIM / DDIM-eta in the flow frame): (Phi, W, K), each [S, k, k],
    z' = Phi z + W score + K xi.

    For a point mass the step must map N(a_t x0, Sigma_t) to N(a_t' x0, Sigma_t'): noise K K^T = eta^2 C with C the
    bridge covariance, and Psi_eta = chol(Sigma_t' - eta^2 C) Rot(theta_t' - theta_t) L_t^-1, which is the flow
    R_t' R_t^-1 at eta = 0 (exp_ode order 1) and has the bridge's law at eta = 1. With a_t D = z + Sigma_t score,
    z' = a_t' D + Psi_eta (z - a_t D) = Phi z + (Phi - Psi_eta) Sigma_t score + K xi.
    """
    key = ("eta", repr(sorted(process.config().items())), tuple(ts.tolist()), float(eta))
    if key in _CACHE:
        return _CACHE[key]
    ts = ts.to(torch.float64).cpu()
    ff = FlowFrame(process)
    t, tn = ts[:-1], ts[1:]
    K = eta * ff.bridge_noise(t, tn)
    S_n, S_t = ff._cov(tn), ff._cov(t)
    B = S_n - K @ K.transpose(-1, -2)
    if ff.k == 1:
        LB = B.clamp_min(0).sqrt()
        rot = torch.ones_like(B)
    else:
        l11, l21, l22 = safe_cholesky2(B[:, 0, 0], B[:, 0, 1], B[:, 1, 1])
        LB = torch.stack([torch.stack([l11, torch.zeros_like(l11)], -1), torch.stack([l21, l22], -1)], -2)
        theta = ff.thetas(ts)
        rot = _rot(theta[1:] - theta[:-1])
    L_t = process.marginal_coeffs(t)[1]
    Psi = LB @ rot @ torch.linalg.inv(L_t)
    Phi = ff.phi(tn, t)
    out = (Phi, (Phi - Psi) @ S_t, K)
    _CACHE[key] = out
    return out
