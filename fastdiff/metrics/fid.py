"""Fréchet distance and kernel (KID) distance as torchmetrics Metrics over features, with fixed reference sets.

Fréchet distance (Heusel et al. 2017): ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^{1/2}) between the Gaussians
fitted to reference and generated features. The generated side accumulates float64 sums and outer products
(sum-reduced across ranks); the reference side is a fixed (mu, sigma). Called "FID" only with Inception features.

KID (Binkowski et al. 2018): unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over
random subsets. Its generated features are gathered across ranks (padded all_gather) and sorted by seed, so the
value does not depend on how the seeds were split over ranks.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from fastdiff.registry import METRICS


def sqrtm_trace_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 via the symmetric form S1^{1/2} S2 S1^{1/2} (float64, eigh)."""
    s1, s2 = sigma1.double(), sigma2.double()
    s1 = 0.5 * (s1 + s1.T)
    evals, evecs = torch.linalg.eigh(s1)
    root = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    inner = root @ (0.5 * (s2 + s2.T)) @ root
    return torch.linalg.eigvalsh(0.5 * (inner + inner.T)).clamp_min(0).sqrt().sum()


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64 scalar)."""
    mu1, mu2 = mu1.double(), mu2.double()
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"frechet_distance: shapes do not match: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, "
                         f"sigma {tuple(sigma1.shape)} / {tuple(sigma2.shape)}")
    diff = mu1 - mu2
    return diff.dot(diff) + sigma1.double().trace() + sigma2.double().trace() - 2 * sqrtm_trace_product(sigma1, sigma2)


def mean_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of features [N, F] in float64."""
    f = features.double().reshape(features.shape[0], -1)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


@METRICS.register("frechet")
class FrechetDistance(Metric):
    """Fréchet distance of generated features to fixed reference statistics; float64 sum states (sum-synced)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, ref_mu: Tensor, ref_sigma: Tensor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ref_mu = torch.as_tensor(ref_mu, dtype=torch.float64)
        ref_sigma = torch.as_tensor(ref_sigma, dtype=torch.float64)
        d = ref_mu.shape[0]
        if ref_mu.ndim != 1 or ref_sigma.shape != (d, d):
            raise ValueError(f"reference mu must be [F] and sigma [F, F]; got {tuple(ref_mu.shape)}, "
                             f"{tuple(ref_sigma.shape)}")
        self.num_features = d
        self.register_buffer("ref_mu", ref_mu, persistent=False)
        self.register_buffer("ref_sigma", ref_sigma, persistent=False)
        self.add_state("feat_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("feat_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: Tensor, seeds: Tensor | Sequence[int] | None = None) -> None:
        """Add generated features [N, F] (``seeds`` accepted for a uniform interface; sums ignore order)."""
        f = features.detach().reshape(features.shape[0], -1).double()
        if f.shape[1] != self.num_features:
            raise ValueError(f"features have {f.shape[1]} dimensions, the reference has {self.num_features}")
        self.feat_sum += f.sum(0)
        self.feat_outer += f.T @ f
        self.count += f.shape[0]

    def compute(self) -> Tensor:
        n = self.count
        if n < 2:
            raise ValueError(f"Fréchet distance needs at least 2 generated samples, got {int(n)}")
        mu = self.feat_sum / n
        sigma = (self.feat_outer - n * torch.outer(mu, mu)) / (n - 1)
        return frechet_distance(self.ref_mu, self.ref_sigma, mu, sigma)


class SampleSetMetric(Metric):
    """Keeps every generated feature vector with its seed; ``samples()`` gives them gathered and sorted by seed.

    States are flat float64 lists (``cat``-reduced): flat and float64 so that a rank with no samples (whose
    placeholder is a 1-D empty tensor of the metric dtype) matches the other ranks; torchmetrics gathers the sizes,
    pads to the largest and trims, so uneven shares are fine.
    """

    full_state_update = False

    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_features = int(num_features)
        self.add_state("flat_features", [], dist_reduce_fx="cat")
        self.add_state("seeds", [], dist_reduce_fx="cat")

    @property
    def dtype(self) -> torch.dtype:
        """float64 always: torchmetrics' placeholder for a rank without samples must match the other ranks'
        states (``.to(device)`` would otherwise reset the metric dtype to float32)."""
        return torch.float64

    def update(self, features: Tensor, seeds: Tensor | Sequence[int]) -> None:
        """Add features [N, F] of the samples with the given seeds (seeds must be < 2**53)."""
        f = features.detach().reshape(features.shape[0], -1).double()
        if f.shape[1] != self.num_features:
            raise ValueError(f"features have {f.shape[1]} dimensions, expected {self.num_features}")
        s = torch.as_tensor(list(seeds) if not isinstance(seeds, Tensor) else seeds, dtype=torch.float64,
                            device=f.device).reshape(-1)
        if s.shape[0] != f.shape[0]:
            raise ValueError(f"{f.shape[0]} feature rows but {s.shape[0]} seeds")
        self.flat_features.append(f.reshape(-1))
        self.seeds.append(s)

    def samples(self) -> Tensor:
        """All features [N, F] (after sync: every rank's), ordered by seed."""
        def cat(x: Any) -> Tensor:
            if isinstance(x, Tensor):
                return x.reshape(-1)
            return torch.cat([t.reshape(-1) for t in x]) if len(x) else torch.zeros(0, dtype=torch.float64,
                                                                                    device=self.device)
        feats = cat(self.flat_features).reshape(-1, self.num_features)
        seeds = cat(self.seeds)
        return feats[torch.argsort(seeds, stable=True)]

    def compute(self) -> Tensor:
        """The gathered, seed-ordered features (subclasses turn them into a distance)."""
        return self.samples()


def kid_subsets(x: Tensor, y: Tensor, n_subsets: int = 100, subset_size: int = 1000,
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """KID = mean (and std) over random subsets of the unbiased polynomial-kernel MMD^2 (Binkowski et al. 2018)."""
    x, y = x.double(), y.double()
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {x.shape[0]} and {y.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(n_subsets):
        ix = torch.randperm(x.shape[0], generator=g)[:m].to(x.device)
        iy = torch.randperm(y.shape[0], generator=g)[:m].to(y.device)
        vals.append(poly_mmd2_unbiased(x[ix], y[iy]))
    v = torch.stack(vals)
    return v.mean(), (v.std() if n_subsets > 1 else torch.zeros((), dtype=v.dtype, device=v.device))


def poly_mmd2_unbiased(x: Tensor, y: Tensor, degree: int = 3) -> Tensor:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^degree."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** degree
    kyy = (y @ y.T / d + 1) ** degree
    kxy = (x @ y.T / d + 1) ** degree
    n, m = x.shape[0], y.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


@METRICS.register("kid")
class KernelDistance(SampleSetMetric):
    """KID of generated features against fixed reference features (subset mean; the std is in ``last_std``)."""

    higher_is_better = False

    def __init__(self, ref_features: Tensor, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                 **kwargs: Any) -> None:
        ref = torch.as_tensor(ref_features, dtype=torch.float64)
        super().__init__(ref.shape[1], **kwargs)
        self.register_buffer("ref_features", ref, persistent=False)
        self.n_subsets, self.subset_size, self.kid_seed = int(n_subsets), int(subset_size), int(seed)
        self.last_std: float = float("nan")

    def compute(self) -> Tensor:
        mean, std = kid_subsets(self.ref_features, self.samples(), self.n_subsets, self.subset_size, self.kid_seed)
        self.last_std = float(std)
        return mean
