"""The quality instrument on the Gaussian-mixture oracles: exact log-likelihood gap, per-mode dispersion, mode
weights, pathwise error; with standard errors, so cells can be called won or lost beyond 2 SE.

- **Log-likelihood gap** g = E_exact[log p(X)] - mean_i log p(x_i), p the exact data density. g > 0: samples sit in
  less likely places than exact ones (blurred / too spread); g < 0: in more likely places (over-sharp, mass pulled
  onto modes). Its empirical SE is sqrt(var_i log p(x_i) / n + var_ref / m), the reference being a large exact
  sample of m points (its share of the SE is then small).
- **Dispersion ratio**: each sample is assigned to its most probable component; per mode, sqrt of the mean
  squared Mahalanobis distance of its samples over that of the exact reference's; the weighted geometric mean
  over modes (1 = right spread, > 1 blurred) and the worst mode (largest |log ratio|) are reported.
- **Mode-weight error**: total variation between the samples' assignment frequencies and the reference's.
- **Pathwise error** (deterministic samplers): RMS per coordinate of x_i - x_ref,i, x_ref a converged solve of the
  probability-flow ODE from the same prior draws.
- SW1 / MMD^2 to the reference stay as secondary columns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fastdiff.metrics.toy import mmd_rbf
from fastdiff.oracle import GaussianMixture


@dataclass
class Metrics:
    gap: float  # signed mean log-likelihood gap (reference minus samples)
    gap_se: float
    disp: float  # weighted geometric mean over modes of the dispersion ratio
    disp_worst: float  # the mode whose ratio is farthest from 1 (in log)
    wtv: float  # total variation of the mode weights
    sw: float
    mmd: float
    logp: Tensor  # per-sample exact log p (kept in memory for paired comparisons, not written out)


class Instrument:
    """Everything computed once per problem: the exact reference sample, its log-density statistics, its mode
    frequencies and per-mode Mahalanobis means; SW1 against the same reference."""

    def __init__(self, mix: GaussianMixture, n: int, n_ref: int = 20000, seed: int = 1000, n_mmd: int = 500,
                 secondary: bool = True) -> None:
        from benchmarks.quality import SlicedW1

        self.mix, self.n = mix, n
        n_ref = n * max(1, -(-n_ref // n))  # a multiple of n (SlicedW1's quantile coupling), at least n_ref
        self.ref = mix.sample(n_ref, torch.Generator().manual_seed(seed))
        lp = mix.log_density(self.ref)
        self.ref_mean, self.ref_var, self.m = lp.mean().item(), lp.var().item(), n_ref
        comp = mix.assign(self.ref)
        K = mix.means.shape[0]
        self.ref_freq = torch.bincount(comp, minlength=K).double() / n_ref
        maha = mix.mahalanobis_sq(self.ref, comp)
        self.ref_maha = torch.zeros(K, dtype=torch.float64).index_add_(0, comp, maha) / torch.bincount(
            comp, minlength=K).clamp_min(1)
        self.sw1 = SlicedW1(self.ref, n) if secondary else None  # SW1 / MMD^2: secondary columns (off in tests)
        self.n_mmd = min(n, n_mmd)

    def __call__(self, x: Tensor) -> Metrics:
        x = x.double().reshape(x.shape[0], -1)
        lp = self.mix.log_density(x)
        gap = self.ref_mean - lp.mean().item()
        se = math.sqrt(lp.var().item() / x.shape[0] + self.ref_var / self.m)
        comp = self.mix.assign(x)
        K = self.ref_freq.shape[0]
        counts = torch.bincount(comp, minlength=K).double()
        freq = counts / x.shape[0]
        maha = torch.zeros(K, dtype=torch.float64).index_add_(0, comp, self.mix.mahalanobis_sq(x, comp))
        seen = counts > 0
        log_ratio = 0.5 * torch.log((maha[seen] / counts[seen]) / self.ref_maha[seen])
        w = freq[seen] / freq[seen].sum()
        worst = log_ratio[log_ratio.abs().argmax()].item()
        sw, mmd = ((self.sw1(x), mmd_rbf(x[:self.n_mmd], self.ref[:self.n_mmd]).item()) if self.sw1 is not None
                   else (math.nan, math.nan))
        return Metrics(gap, se, math.exp((w * log_ratio).sum().item()), math.exp(worst),
                       0.5 * (freq - self.ref_freq).abs().sum().item(), sw, mmd, lp)


def path_errors(x: Tensor, x_ref: Tensor) -> Tensor:
    """Per sample: the mean over coordinates of the squared difference to the reference solve (float64)."""
    d = (x.double().reshape(x.shape[0], -1) - x_ref.double().reshape(x.shape[0], -1))
    return d.pow(2).mean(dim=1)


def path_rms(e: Tensor) -> float:
    """The pathwise RMS error from per-sample errors ``e`` (:func:`path_errors`)."""
    return e.mean().sqrt().item()


def pathwise_error(x: Tensor, x_ref: Tensor) -> float:
    """RMS per coordinate of the difference to the reference solve from the same prior draws."""
    return path_rms(path_errors(x, x_ref))


def path_se(e: Tensor) -> float:
    """SE of the RMS sqrt(mean e) over i.i.d. per-sample errors e (delta method: SE(mean) / (2 RMS))."""
    rms = path_rms(e)
    return 0.0 if rms == 0 else e.std().item() / math.sqrt(e.shape[0]) / (2 * rms)


def compare_paths(ea: Tensor, eb: Tensor) -> tuple[float, float]:
    """D = RMS_a - RMS_b and its SE, paired over samples (the same prior draw in row i of both runs), by the delta
    method: D ~ mean_i (e_a,i / (2 RMS_a) - e_b,i / (2 RMS_b)) up to a constant, so SE = sd of that / sqrt(n)."""
    ra, rb = path_rms(ea), path_rms(eb)
    lin = ea / (2 * max(ra, 1e-300)) - eb / (2 * max(rb, 1e-300))
    return ra - rb, lin.std().item() / math.sqrt(lin.shape[0])


def compare(a: Metrics, b: Metrics, ref_var: float, m: int) -> tuple[float, float]:
    """D = |gap_a| - |gap_b| and its SE, paired over samples (row i of both runs starts from the same prior draw;
    pairs are i.i.d. over i whatever the correlation within a pair, so the paired SE is valid).

    With s = sign(gap): D = (s_a - s_b) E_ref[log p] - mean_i (s_a lp_a,i - s_b lp_b,i), so
    Var D = (s_a - s_b)^2 var_ref / m + var_i(s_a lp_a,i - s_b lp_b,i) / n. D < -2 SE: a better beyond noise.
    """
    sa, sb = math.copysign(1.0, a.gap), math.copysign(1.0, b.gap)
    d = abs(a.gap) - abs(b.gap)
    diff = sa * a.logp - sb * b.logp
    var = (sa - sb) ** 2 * ref_var / m + diff.var().item() / diff.shape[0]
    return d, math.sqrt(var)
