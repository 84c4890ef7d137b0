"""Linear forward SDEs dz = F(t) z dt + G(t) dw with Gaussian kernels (score_sde-style base class).

Every process acts per coordinate on blocks of size k: k = 1 for VE/VP (the state is the data), k = 2 for
PSLD (the state is data x followed by momentum m along dim 1). A subclass supplies four small pieces of math
as per-coordinate k x k matrices in float64; everything else (sde, perturb, transition, scores, Tweedie)
is derived here once, so samplers never need to know which process they run on.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape [B] (or [B, ...]) to broadcast against a tensor with ``ndim`` dims."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))

def as_time(t: Tensor | float, batch: int, device: torch.device | None = None) -> Tensor:
    """Times as a float64 tensor of shape [batch]."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    return t.to(torch.float64)

def safe_cholesky2(sxx: Tensor, sxm: Tensor, smm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Lower Cholesky factor (l11, l21, l22) of [[sxx, sxm], [sxm, smm]], clamped for (semi-)definite input."""
    l11 = sxx.clamp_min(0).sqrt()
    l21 = torch.where(l11 > 0, sxm / l11.clamp_min(1e-300), torch.zeros_like(sxm))
    l22 = (smm - l21**2).clamp_min(0).sqrt()
    return l11, l21, l22

class Process(ABC):
    """Base class of forward processes. Time runs from 0 (data) to T (prior)."""

    T: float = 1.0
    t_eps_train: float = 1e-5
    t_eps_sample: float = 1e-3
    augmented: ClassVar[bool] = False
    k: ClassVar[int] = 1  # per-coordinate block size of the state (1: data only, 2: data + momentum)
    capabilities: ClassVar[frozenset[str]] = frozenset()  # e.g. "edm_view" (scalar sigma), "phase_space"
    default_parameterization: ClassVar[str] = "eps"
    parameterizations: ClassVar[tuple[str, ...]] = ("eps",)

    def check_sample_time(self) -> None:
        """Constructor check shared by every process: sampling stops at t_eps_sample, inside (0, T)."""
        if not 0 < self.t_eps_sample < self.T:
            raise ValueError(f"t_eps_sample: {self.t_eps_sample!r} is out of range — must lie in (0, T = {self.T})")

    # ---- the process-specific math (per coordinate, float64, leading dim = batch) -----------------------
    @abstractmethod
    def sde_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(F, GG): drift matrix and diffusion covariance G G^T, each [B, k, k]."""

    @abstractmethod
    def transition_coeffs(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(A, Q) with z_t = A z_s + N(0, Q) for s <= t, each [B, k, k]."""

    @abstractmethod
    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(a, L): training kernel z_t = a x0 + L eps; a is [B, k], L lower-triangular [B, k, k]."""

    @abstractmethod
    def prior_chol(self) -> Tensor:
        """Lower Cholesky factor [k, k] of the per-coordinate prior covariance at T."""

    def initial_aux_var(self) -> float:
        """Variance of the auxiliary (momentum) coordinates at t = 0 (augmented processes only)."""
        return 0.0

    # ---- shapes ----------------------------------------------------------------------------------------
    def state_channels(self, c: int) -> int:
        return self.k * c

    def state_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the state batch for a data batch of ``shape`` (augmented: dim 1 widened)."""
        shape = tuple(int(s) for s in shape)
        return (shape[0], self.state_channels(shape[1]), *shape[2:])

    def data_part(self, z: Tensor) -> Tensor:
        """The data coordinates of a state (drops momentum for augmented processes)."""
        return z if self.k == 1 else z.chunk(self.k, dim=1)[0]

    def split(self, z: Tensor) -> tuple[Tensor, ...]:
        return (z,) if self.k == 1 else z.chunk(self.k, dim=1)

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        return parts[0] if self.k == 1 else torch.cat(list(parts), dim=1)

    # ---- block linear algebra --------------------------------------------------------------------------
    def apply(self, mat: Tensor, z: Tensor) -> Tensor:
        """Per-coordinate matrix product mat @ z for mat [B, k, k] (or [k, k]) and state z.

        One broadcast product and a sum over the k columns (a handful of ops whatever k is: the score wrapper and
        the samplers call this on every step, where per-op overhead, not arithmetic, is the cost). Entry (i, j)
        is cast to z's dtype and multiplied by block j, the k products summed in order j = 0, 1, ..: the same
        floating-point operations as the explicit double loop.
        """
        if mat.ndim == 2:
            mat = mat.unsqueeze(0)
        m = mat.to(z.dtype)
        if self.k == 1:
            return append_dims(m[:, 0, 0], z.ndim) * z
        blocks = z.reshape(z.shape[0], 1, self.k, math.prod(z.shape[1:]) // self.k)  # [B, 1, j, n]: block j
        return (m.unsqueeze(-1) * blocks).sum(2).reshape(z.shape)  # [B, i, j, n] summed over j

    def scale_blocks(self, c: Tensor, z: Tensor) -> Tensor:
        """Block i of z times c[:, i] for c [B, k] (a diagonal ``apply`` without the zero products)."""
        blocks = z.reshape(z.shape[0], self.k, math.prod(z.shape[1:]) // self.k)
        return (c.to(z.dtype).unsqueeze(-1) * blocks).reshape(z.shape)

    def _time(self, t: Tensor | float, z: Tensor) -> Tensor:
        return as_time(t, z.shape[0], z.device)

    # ---- derived quantities ----------------------------------------------------------------------------
    def sde(self, z: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Forward drift f(z, t) (shape of z) and diffusion g(t) (broadcastable to z; diagonal G)."""
        F, GG = self.sde_coeffs(self._time(t, z))
        return self.apply(F, z), self._diffusion_of(GG, z)

    def diffusion(self, z: Tensor, t: Tensor | float) -> Tensor:
        """The diffusion g(t) of :meth:`sde` alone, z-shaped (Euler-Maruyama's noise scale)."""
        return self._diffusion_of(self.sde_coeffs(self._time(t, z))[1], z)

    def _diffusion_of(self, GG: Tensor, z: Tensor) -> Tensor:
        g = torch.diagonal(GG, dim1=-2, dim2=-1).clamp_min(0).sqrt()  # [B, k]
        return self.scale_blocks(g, torch.ones_like(z))  # block i filled with g_i (1 * g_i: exact)

    def gg_times(self, z: Tensor, t: Tensor | float, v: Tensor) -> Tensor:
        """G G^T v (e.g. v = score)."""
        return self.apply(self.sde_coeffs(self._time(t, z))[1], v)

    def reverse_drift(self, z: Tensor, t: Tensor | float, score: Tensor, prob_flow: bool = False) -> Tensor:
        """dz/dt of the reverse-time SDE (f - G G^T score) or of the PF-ODE (f - G G^T score / 2), in forward t."""
        F, GG = self.sde_coeffs(self._time(t, z))  # once: samplers call this on every step
        gg_s = self.apply(GG, score)
        return self.apply(F, z) - (0.5 * gg_s if prob_flow else gg_s)

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean of z_t given x0 (state shape) and the lower Cholesky factor [B, k, k] of its covariance."""
        a, L = self.marginal_coeffs(as_time(t, x0.shape[0], x0.device))
        mean = self.join([append_dims(a[:, i], x0.ndim).to(x0.dtype) * x0 for i in range(self.k)])
        return mean, L

    def perturb(self, x0: Tensor, t: Tensor | float, eps: Tensor) -> Tensor:
        """Sample z_t ~ p(z_t | x0) with standard normal ``eps`` of the state shape."""
        mean, L = self.marginal(x0, t)
        return mean + self.apply(L, eps)

    def transition(self, z_s: Tensor, s: Tensor | float, t: Tensor | float, eps: Tensor) -> Tensor:
        """Sample p(z_t | z_s) for s <= t (Restart's forward jump)."""
        A, Q = self.transition_coeffs(self._time(s, z_s), self._time(t, z_s))
        return self.apply(A, z_s) + self.apply(block_cholesky(Q), eps)

    def prior_sample(self, eps: Tensor) -> Tensor:
        """Draw z_T from the prior, given standard normal ``eps`` of the state shape."""
        return self.apply(self.prior_chol().to(eps.device), eps)

    def score_from_eps(self, eps_hat: Tensor, z: Tensor, t: Tensor | float, chol: Tensor | None = None) -> Tensor:
        """score = -L^{-T} eps_hat with the training kernel's Cholesky factor L at t (``chol``: L, when the caller
        has it already from ``marginal_coeffs(t)``)."""
        L = self.marginal_coeffs(self._time(t, z))[1] if chol is None else chol
        return -self.apply(torch.linalg.inv(L).transpose(-1, -2), eps_hat)

    def eps_from_score(self, score: Tensor, z: Tensor, t: Tensor | float) -> Tensor:
        """Inverse of :meth:`score_from_eps`: eps = -L^T score."""
        _, L = self.marginal_coeffs(self._time(t, z))
        return -self.apply(L.transpose(-1, -2), score)

    def denoise(self, z: Tensor, t: Tensor | float, score: Tensor,
                kernel: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Tweedie estimate E[x0 | z_t] (data shape): GLS solve of a x0 = z + Sigma score.

        ``kernel``: ``marginal_coeffs`` at t when the caller has it (a sampler forms its whole grid's at once).
        """
        a, L = self.marginal_coeffs(self._time(t, z)) if kernel is None else kernel
        if self.k == 1:
            s = append_dims(L[:, 0, 0], z.ndim).to(z.dtype)
            return (z + s**2 * score) / append_dims(a[:, 0], z.ndim).to(z.dtype)
        cov_inv = torch.cholesky_inverse(L)  # [B, k, k]
        w = torch.einsum("bi,bij->bj", a, cov_inv)  # a^T Sigma^{-1}
        denom = (w * a).sum(-1)
        y = self.apply(cov_inv, z) + score  # Sigma^{-1} (z + Sigma score)
        parts = self.split(y)
        num = sum(append_dims(a[:, i], z.ndim).to(z.dtype) * parts[i] for i in range(self.k))
        return num / append_dims(denom, z.ndim).to(z.dtype)

    def log_snr(self, t: Tensor | float) -> Tensor:
        """log(a_x^2 / Var(x_t | x0)) of the data coordinate (float64, shape [B]); decreasing in t."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        a, L = self.marginal_coeffs(t)
        return torch.log(a[:, 0] ** 2) - torch.log(L[:, 0, 0] ** 2)

    # ---- config round trip -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """{name, **constructor kwargs}: enough to rebuild the process from a checkpoint."""
        out: dict[str, Any] = {"name": getattr(type(self), "registered_name", type(self).__name__.lower())}
        if dataclasses.is_dataclass(self):
            out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        return out

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

def block_cholesky(Q: Tensor) -> Tensor:
    """Lower Cholesky factor [B, k, k] of k x k (k = 1, 2) PSD blocks [B, k, k], tolerant of zero (s == t) blocks.

    The one place the 2 x 2 factor is formed (PSLD kernel, transitions, the splitting samplers' OU steps).
    """
    if Q.shape[-1] == 1:
        return Q.clamp_min(0).sqrt()
    l11, l21, l22 = safe_cholesky2(Q[:, 0, 0], Q[:, 0, 1], Q[:, 1, 1])
    zero = torch.zeros_like(l11)
    return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)

def scalar_block(v: Tensor) -> Tensor:
    """[B] -> [B, 1, 1]."""
    return v.reshape(-1, 1, 1)

class EDMView(Process):
    """Processes with a scalar noise level: x_t = s(t) (x0 + sigma(t) eps) (VE, VP)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"edm_view"})
    parameterizations: ClassVar[tuple[str, ...]] = ("eps", "edm")

    @abstractmethod
    def scale(self, t: Tensor) -> Tensor:
        """s(t) (float64)."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) (float64)."""

    @abstractmethod
    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of sigma(t) (float64)."""

    def sigma_range(self) -> tuple[float, float]:
        """(sigma at t_eps_train, sigma at T): the noise levels the network was trained on."""
        lo = self.sigma(torch.tensor([self.t_eps_train], dtype=torch.float64)).item()
        hi = self.sigma(torch.tensor([self.T], dtype=torch.float64)).item()
        return lo, hi

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64)
        s, sig = self.scale(t), self.sigma(t)
        return s.reshape(-1, 1), scalar_block(s * sig)

    def log_snr(self, t: Tensor | float) -> Tensor:
        return -2 * torch.log(self.sigma(torch.as_tensor(t, dtype=torch.float64).reshape(-1)))
