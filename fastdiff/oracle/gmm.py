"""Gaussian mixtures with exact marginal scores under every linear process (the oracle)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..processes.base import Process

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class GaussianMixture:
    """Mixture sum_j w_j N(mu_j, Sigma_j) in R^d; its marginal under a linear process is again a mixture."""

    def __init__(self, weights: Sequence[float] | Tensor, means: Sequence | Tensor, covs: Sequence | Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        if self.means.ndim != 2:
            raise ValueError(f"means must have shape [K, d], got {tuple(self.means.shape)}")
        K, d = self.means.shape
        if self.weights.shape != (K,) or (self.weights < 0).any() or self.weights.sum() <= 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum")
        if self.covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape [K, d, d] = [{K}, {d}, {d}], got {tuple(self.covs.shape)}")
        self.weights = self.weights / self.weights.sum()
        self._chol = torch.linalg.cholesky(self.covs)  # raises if not positive definite
        # diagonal covariances skip the per-component rotation (O(K B d) per score call instead of O(K B d^2))
        off = self.covs - torch.diag_embed(torch.diagonal(self.covs, dim1=-2, dim2=-1))
        self.is_diagonal = bool((off == 0).all())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # ---- convenience constructors ----------------------------------------------------------------------
    @classmethod
    def gaussian(cls, mean: Sequence[float] | Tensor, cov: Sequence | Tensor) -> "GaussianMixture":
        return cls([1.0], torch.as_tensor(mean, dtype=torch.float64)[None], torch.as_tensor(cov, dtype=torch.float64)[None])

    @classmethod
    def ring(cls, k: int = 8, radius: float = 1.0, std: float = 0.1) -> "GaussianMixture":
        """k equal-weight isotropic Gaussians on a circle in 2-D."""
        ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means = radius * torch.stack([ang.cos(), ang.sin()], -1)
        return cls(torch.ones(k), means, (std**2) * torch.eye(2, dtype=torch.float64).expand(k, 2, 2))

    @classmethod
    def random(cls, k: int, d: int, seed: int = 0, scale: float = 1.0, anisotropy: float = 10.0) -> "GaussianMixture":
        """A random anisotropic mixture: means ~ N(0, scale^2), covariance eigenvalues spread by ``anisotropy``."""
        g = torch.Generator().manual_seed(seed)
        means = scale * torch.randn(k, d, generator=g, dtype=torch.float64)
        covs = []
        for _ in range(k):
            q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            ev = (0.15 * scale) ** 2 * torch.logspace(0, -math.log10(anisotropy), d, dtype=torch.float64)
            covs.append(q @ torch.diag(ev) @ q.T)
        w = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
        return cls(w, means, torch.stack(covs))

    @classmethod
    def diagonal(cls, weights: Sequence[float] | Tensor, means: Sequence | Tensor,
                 variances: Sequence | Tensor) -> "GaussianMixture":
        """Mixture with diagonal covariances diag(variances[j]) ([K, d])."""
        return cls(weights, means, torch.diag_embed(torch.as_tensor(variances, dtype=torch.float64)))

    @classmethod
    def image_like(cls, k: int = 10, side: int = 8, seed: int = 0, std: tuple[float, float] = (0.02, 0.2)
                   ) -> "GaussianMixture":
        """A d = side^2 "image" mixture with sharp modes: k smooth patterns in [-1, 1] (bilinear upsampling of a
        random 3x3 grid, like blurred digits) as means, per-pixel stds log-uniform in ``std`` (many nearly
        degenerate directions, as in image data), weights uneven (0.5..1.5 before normalising)."""
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(k, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
        means = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=True)
        lo, hi = math.log(std[0]), math.log(std[1])
        stds = torch.exp(lo + (hi - lo) * torch.rand(k, side * side, generator=g, dtype=torch.float64))
        w = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
        return cls.diagonal(w, means.reshape(k, side * side), stds**2)

    # ---- the data density (time 0) ---------------------------------------------------------------------
    def component_log_probs(self, x: Tensor) -> Tensor:
        """log w_j + log N(x; mu_j, Sigma_j) for every component: [K, B] (float64) for data x [B, d]."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64).cpu()
        if flat.shape[1] != self.dim:
            raise ValueError(f"data has {flat.shape[1]} coordinates, the mixture has {self.dim}")
        lam, Q, mu_rot = self._rotation()
        y = flat[None] if Q is None else torch.einsum("bd,cde->cbe", flat, Q)  # [K or 1, B, d]
        maha = ((y - mu_rot[:, None]) ** 2 / lam[:, None]).sum(-1)
        return (torch.log(self.weights)[:, None] - 0.5 * maha - 0.5 * torch.log(lam).sum(-1)[:, None]
                - 0.5 * self.dim * math.log(2 * math.pi))

    def log_density(self, x: Tensor) -> Tensor:
        """Exact log p(x) [B] of data points x [B, d] under the mixture itself."""
        return torch.logsumexp(self.component_log_probs(x), 0)

    def assign(self, x: Tensor) -> Tensor:
        """Index [B] of each point's most probable component (argmax of the posterior responsibility)."""
        return self.component_log_probs(x).argmax(0)

    def mahalanobis_sq(self, x: Tensor, comp: Tensor) -> Tensor:
        """(x - mu_c)^T Sigma_c^-1 (x - mu_c) [B] of each point to its given component c = comp[b]."""
        lam, Q, mu_rot = self._rotation()
        flat = x.reshape(x.shape[0], -1).to(torch.float64).cpu()
        y = flat if Q is None else torch.einsum("bd,bde->be", flat, Q[comp])
        return ((y - mu_rot[comp]) ** 2 / lam[comp]).sum(-1)

    # ---- moments and sampling --------------------------------------------------------------------------
    def mean(self) -> Tensor:
        return self.weights @ self.means

    def cov(self) -> Tensor:
        mu = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - mu[:, None] * mu[None, :]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n data samples [n, d] (float64)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + torch.einsum("nij,nj->ni", self._chol[comp], eps)

    # ---- marginals under a process ---------------------------------------------------------------------
    def marginal_params(self, process: Process, t: float) -> tuple[Tensor, Tensor]:
        """Means [K, k*d] and covariances [K, k*d, k*d] of the state z_t (state order: data, then momentum)."""
        a, L = process.marginal_coeffs(torch.tensor([float(t)], dtype=torch.float64))
        a, LLt = a[0], (L @ L.transpose(-1, -2))[0]
        eye = torch.eye(self.dim, dtype=torch.float64)
        means = torch.stack([torch.kron(a, mu) for mu in self.means])
        covs = torch.stack([torch.kron(torch.outer(a, a), S) + torch.kron(LLt, eye) for S in self.covs])
        return means, covs

    def log_prob(self, process: Process, z: Tensor, t: Tensor | float) -> Tensor:
        """Exact log p_t(z) [B] of states z (any shape [B, ...]) at times t (scalar or [B])."""
        return self._eval(process, z, t, want_score=False)[0]

    def score(self, process: Process, z: Tensor, t: Tensor | float) -> Tensor:
        """Exact score grad_z log p_t(z), same shape and dtype as z."""
        return self._eval(process, z, t, want_score=True)[1].to(z.dtype)

    def score_fn(self, process: Process) -> ScoreFn:
        """A score_fn(z, t) as samplers expect."""
        return _OracleScore(self, process)

    def _rotation(self) -> tuple[Tensor, Tensor | None, Tensor]:
        """Per-component eigendecomposition Sigma_c = Q_c diag(lam_c) Q_c^T and rotated means Q_c^T mu_c (cached);
        Q is None for diagonal covariances (the identity: no rotation)."""
        if not hasattr(self, "_eig"):
            if self.is_diagonal:
                self._eig = (torch.diagonal(self.covs, dim1=-2, dim2=-1).clone(), None, self.means.clone())
            else:
                lam, Q = torch.linalg.eigh(self.covs)  # [K, d], [K, d, d]
                self._eig = (lam, Q, torch.einsum("kij,ki->kj", Q, self.means))
        return self._eig

    def _eval(self, process: Process, z: Tensor, t: Tensor | float, want_score: bool) -> tuple[Tensor, Tensor | None]:
        """In row blocks whose [K, rows, k, d] temporaries stay near 1 MB: large fresh float64 buffers go through
        mmap and page faults on every allocation, which made one 64-d call ~6x slower than the blocked loop."""
        B = z.shape[0]
        rows = max(1, 2**17 // (self.means.shape[0] * self.dim * process.k))
        if B <= rows:
            return self._eval_block(process, z, t, want_score)
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        tt = tt.expand(B) if tt.numel() == 1 else tt
        parts = [self._eval_block(process, z[i:i + rows], tt[i:i + rows], want_score) for i in range(0, B, rows)]
        logp = torch.cat([p[0] for p in parts])
        return logp, (torch.cat([p[1] for p in parts]) if want_score else None)  # type: ignore[misc]

    def _eval_block(self, process: Process, z: Tensor, t: Tensor | float, want_score: bool
                    ) -> tuple[Tensor, Tensor | None]:
        """Vectorised over the batch with one time per sample: in each component's eigenbasis the state covariance
        of a rotated coordinate is lam a a^T + L L^T (a k x k block, k = 1 or 2), inverted in closed form."""
        B, k = z.shape[0], process.k
        flat = z.reshape(B, -1).to(torch.float64).cpu()
        if flat.shape[1] != k * self.dim:
            raise ValueError(f"state has {flat.shape[1]} coordinates, the mixture under {type(process).__name__} "
                             f"needs {k * self.dim}")
        if k not in (1, 2):
            raise ValueError(f"the oracle supports per-coordinate blocks of size 1 or 2, got {k}")
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).cpu()
        tt = tt.expand(B) if tt.numel() == 1 else tt
        lam_all, Q, mu_rot = self._rotation()
        a, L = process.marginal_coeffs(tt)
        a, L = a.to(torch.float64), L.to(torch.float64)
        if bool((tt == tt[0]).all()):  # one time for the batch (the usual call): per-component terms once, broadcast
            a, L = a[:1], L[:1]
        R = L @ L.transpose(-1, -2)  # [B, k, k]
        per = flat.reshape(B, k, self.dim)
        y = per[None] if Q is None else torch.einsum("bjd,cde->cbje", per, Q)  # [K or 1, B, k, d]
        diff = y - a[None, :, :, None] * mu_rot[:, None, None, :]
        lam = lam_all[:, None, :]  # [K, 1, d]
        if k == 1:
            c = lam * a[None, :, 0, None] ** 2 + R[None, :, 0, 0, None]  # [K, B, d]
            sol = (diff[:, :, 0] / c)[:, :, None]
            logdet = torch.log(c).sum(-1)
        else:
            p = lam * a[None, :, 0, None] ** 2 + R[None, :, 0, 0, None]
            q = lam * (a[:, 0] * a[:, 1])[None, :, None] + R[None, :, 0, 1, None]
            r = lam * a[None, :, 1, None] ** 2 + R[None, :, 1, 1, None]
            det = p * r - q**2
            d0, d1 = diff[:, :, 0], diff[:, :, 1]
            sol = torch.stack([(r * d0 - q * d1) / det, (p * d1 - q * d0) / det], 2)
            logdet = torch.log(det).sum(-1)
        n = flat.shape[1]
        comp = (torch.log(self.weights)[:, None] - 0.5 * (diff * sol).sum((2, 3)) - 0.5 * logdet
                - 0.5 * n * math.log(2 * math.pi))  # [K, B]
        logp = torch.logsumexp(comp, 0)
        out_score = None
        if want_score:
            resp = torch.softmax(comp, 0)
            back = sol if Q is None else torch.einsum("cbje,cde->cbjd", sol, Q)  # back in the original basis
            out_score = (-(resp[:, :, None, None] * back).sum(0)).reshape(z.shape).to(z.device)
        return logp.to(z.device), out_score


class _OracleScore:
    """Picklable score_fn closure over (mixture, process)."""

    def __init__(self, mixture: GaussianMixture, process: Process) -> None:
        self.mixture, self.process = mixture, process

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        return self.mixture.score(self.process, z, t)
