"""Sample-based distances for low-dimensional (e.g. 2-D toy) data: sliced Wasserstein and RBF-kernel MMD.

Both are torchmetrics Metrics whose generated samples are gathered across ranks and sorted by seed (see
:class:`fastdiff.metrics.fid.SampleSetMetric`), so DDP gives the single-process value. Functional forms
(:func:`sliced_wasserstein`, :func:`mmd_rbf`) are used by the benchmarks as well.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from fastdiff.metrics.fid import SampleSetMetric
from fastdiff.registry import METRICS

DEFAULT_BANDWIDTHS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def wasserstein_1d(u: Tensor, v: Tensor, p: float = 2.0) -> Tensor:
    """Exact W_p^p between the empirical laws of u [..., n] and v [..., m] along the last dim (quantile coupling).

    The quantile functions are piecewise constant with breaks at k/n and k/m; on each piece of the merged
    breaks both are constant, so the integral of |F_u^{-1} - F_v^{-1}|^p is a finite sum.
    """
    n, m = u.shape[-1], v.shape[-1]
    us, vs = u.double().sort(-1).values, v.double().sort(-1).values
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, dtype=torch.float64) / m]).sort().values.to(us.device)
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    mid = levels - widths / 2
    iu = (mid * n).floor().long().clamp(max=n - 1)
    iv = (mid * m).floor().long().clamp(max=m - 1)
    return ((us[..., iu] - vs[..., iv]).abs() ** p * widths).sum(-1)


def random_directions(d: int, n_proj: int, seed: int = 0) -> Tensor:
    """n_proj unit vectors in R^d (float64), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_proj, d, generator=g, dtype=torch.float64)
    return w / w.norm(dim=1, keepdim=True)


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256, p: float = 2.0, seed: int = 0) -> Tensor:
    """Sliced Wasserstein SW_p = (mean over random directions theta of W_p^p(theta.x, theta.y))^(1/p)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein expects [N, d] and [M, d]; got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("sliced_wasserstein needs at least one sample on each side")
    w = random_directions(x.shape[1], n_proj, seed).to(x.device)
    return wasserstein_1d(w @ x.double().T, w @ y.double().T, p).mean() ** (1.0 / p)


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS) -> Tensor:
    """Unbiased MMD^2 with the kernel sum_s exp(-|a - b|^2 / (2 s^2)) over the bandwidths s (Gretton et al. 2012)."""
    x, y = x.double(), y.double()
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd_rbf needs at least 2 samples on each side, got {n} and {m}")

    def kern(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)  # type: ignore[return-value]

    kxx, kyy, kxy = kern(x, x), kern(y, y), kern(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


class _ReferenceSetMetric(SampleSetMetric):
    """A sample-set metric against fixed reference samples [M, d]."""

    higher_is_better = False

    def __init__(self, ref_samples: Tensor, **kwargs: Any) -> None:
        ref = torch.as_tensor(ref_samples, dtype=torch.float64)
        if ref.ndim != 2 or ref.shape[0] < 2:
            raise ValueError(f"reference samples must be [M >= 2, d], got {tuple(ref.shape)}")
        super().__init__(ref.shape[1], **kwargs)
        self.register_buffer("ref_samples", ref, persistent=False)


@METRICS.register("sliced_w")
class SlicedWasserstein(_ReferenceSetMetric):
    """Sliced W_p of the generated samples to the reference samples (fixed random directions)."""

    def __init__(self, ref_samples: Tensor, n_proj: int = 256, p: float = 2.0, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(ref_samples, **kwargs)
        self.n_proj, self.p, self.proj_seed = int(n_proj), float(p), int(seed)

    def compute(self) -> Tensor:
        return sliced_wasserstein(self.samples(), self.ref_samples, self.n_proj, self.p, self.proj_seed)


@METRICS.register("mmd")
class MMD(_ReferenceSetMetric):
    """Unbiased RBF-kernel MMD^2 (multi-bandwidth) of the generated samples to the reference samples."""

    def __init__(self, ref_samples: Tensor, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS, **kwargs: Any) -> None:
        super().__init__(ref_samples, **kwargs)
        self.bandwidths = tuple(float(b) for b in bandwidths)

    def compute(self) -> Tensor:
        return mmd_rbf(self.samples(), self.ref_samples, self.bandwidths)
