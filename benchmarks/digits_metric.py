"""fd_digits with a standard error, for trained digits networks (no exact density there).

fd_digits is the Fréchet distance between the samples' and the digits training images' features of fastdiff's
small digits classifier (``fastdiff.metrics.features.ClassifierFeatures('digits')``; never called FID). Its SE is a
bootstrap over the samples (the reference set is fixed), so two samplers' values are compared against it as the
mixtures' log-likelihood gaps are: a difference beyond 2 SE (sqrt of the sum of both squared SEs) counts.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fastdiff.metrics.features import ClassifierFeatures, LABELED_DATA
from fastdiff.metrics.fid import frechet_distance, mean_cov


class DigitsFD:
    """Callable on samples [n, 1, 8, 8] in [-1, 1]: (fd_digits, bootstrap SE)."""

    def __init__(self, boot: int = 20, seed: int = 0) -> None:
        self.features = ClassifierFeatures("digits")
        self.shape = tuple(self.features.data_shape)
        images, _ = LABELED_DATA["digits"]("train")
        with torch.no_grad():
            self.ref_mu, self.ref_cov = mean_cov(self.features(images))
        self.boot, self.seed = boot, seed

    def fd(self, f: Tensor) -> float:
        mu, cov = mean_cov(f)
        return float(frechet_distance(mu, cov, self.ref_mu, self.ref_cov))

    def __call__(self, x: Tensor) -> tuple[float, float]:
        with torch.no_grad():
            f = self.features(x.float().clamp(-1, 1)).double()
        g = torch.Generator().manual_seed(self.seed)
        reps = torch.tensor([self.fd(f[torch.randint(0, f.shape[0], (f.shape[0],), generator=g)])
                             for _ in range(self.boot)])
        return self.fd(f), float(reps.std())
