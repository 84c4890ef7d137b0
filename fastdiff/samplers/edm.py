"""Samplers in the EDM view x̃ = x / s(t) with noise level sigma (Karras et al. 2022), for VE and VP."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..processes.base import EDMView, append_dims
from . import register_sampler
from .base import CountedScore, SamplerError, StepSampler
from .grids import EDM_SIGMA_MAX, EDM_SIGMA_MIN, edm_sigma_range, karras_sigmas, sigma_grid
from .noise import NoiseSource


def edm_denoise(score: CountedScore, process: EDMView, x: Tensor, sigma: Tensor | float,
                idx: Tensor | None = None) -> Tensor:
    """D(x̃; sigma) = x̃ + sigma^2 s(t) score(s(t) x̃, t) with t = t(sigma) (per-sample sigma allowed)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
    t = process.t_of_sigma(sigma)
    s = process.scale(t)
    sc = score(append_dims(s, x.ndim).to(x.dtype) * x, t, idx)
    return x + append_dims(sigma**2 * s, x.ndim).to(x.dtype) * sc


class EDMSampler(StepSampler):
    """Base of EDM-view samplers: a Karras sigma grid of ``steps`` points plus a final 0."""

    requires: ClassVar[str | None] = "edm_view"
    default_steps = 18

    @dataclass
    class Options(StepSampler.Options):
        rho: float = 7.0
        sigma_min: float = EDM_SIGMA_MIN
        sigma_max: float = EDM_SIGMA_MAX

    def end_sigma(self) -> float:
        """The smallest nonzero noise level asked for (before clipping to the process's range): ``sigma_min``."""
        return self.options.sigma_min

    def sigmas(self, process: EDMView, device: torch.device) -> Tensor:
        """Karras grid clipped to the process's trained range, with 0 appended (float64)."""
        lo, hi = edm_sigma_range(process, self.end_sigma(), self.options.sigma_max)
        grid = karras_sigmas(self.steps, lo, hi, self.options.rho)
        return torch.cat([grid, grid.new_zeros(1)]).to(device)

    def start(self, shape: tuple[int, ...], sigma0: Tensor, noise: NoiseSource, device: torch.device) -> Tensor:
        """x̃ at the first noise level: sigma_0 times each sample's own standard normal."""
        return noise.randn(shape[1:], dtype=self.dtype).to(device) * sigma0.to(self.dtype)

    def run(self, score: CountedScore, process: EDMView, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> Tensor:
        sig = self.sigmas(process, device)
        x = self.start(shape, sig[0], noise, device)
        return self.integrate(score, process, x, sig, noise)

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        raise NotImplementedError


SigmaGrid = Literal["karras", "logsnr", "uniform"]  # grids.SIGMA_GRIDS


class GridEDMSampler(EDMSampler):
    """EDM-view sampler whose sigma grid is an option: Karras rho, even in log-SNR, or even in process time."""

    @dataclass
    class Options(EDMSampler.Options):
        grid: SigmaGrid = "karras"

    def sigmas(self, process: EDMView, device: torch.device) -> Tensor:
        """``steps`` noise levels of the chosen grid on the clipped EDM range, with 0 appended (float64)."""
        lo, hi = edm_sigma_range(process, self.end_sigma(), self.options.sigma_max)
        grid = sigma_grid(self.options.grid, process, self.steps, lo, hi, self.options.rho)
        return torch.cat([grid, grid.new_zeros(1)]).to(device)


def heun_step(score: CountedScore, process: EDMView, x: Tensor, sigma: Tensor, sigma_next: Tensor,
              idx: Tensor | None = None) -> Tensor:
    """One step of Heun's method on dx̃/dsigma = (x̃ - D)/sigma (Euler when sigma_next = 0)."""
    h = (sigma_next - sigma).to(x.dtype)
    d = (x - edm_denoise(score, process, x, sigma, idx)) / sigma.to(x.dtype)
    x_next = x + h * d
    if float(sigma_next) == 0.0:
        return x_next
    d2 = (x_next - edm_denoise(score, process, x_next, sigma_next, idx)) / sigma_next.to(x.dtype)
    return x + h * 0.5 * (d + d2)


@register_sampler("edm_euler")
class EDMEuler(EDMSampler):
    """Euler on the EDM probability-flow ODE over a Karras grid (Karras et al. 2022)."""

    def nfe_for(self, steps: int) -> int:
        return steps

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        for i in range(len(sigmas) - 1):
            d = (x - edm_denoise(score, process, x, sigmas[i])) / sigmas[i].to(x.dtype)
            x = x + (sigmas[i + 1] - sigmas[i]).to(x.dtype) * d
        return x


@register_sampler("edm_heun")
class EDMHeun(EDMSampler):
    """Deterministic Heun sampler, Karras et al. 2022, Algorithm 1 (last step to sigma = 0 is Euler)."""

    def nfe_for(self, steps: int) -> int:
        return 2 * steps - 1

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        for i in range(len(sigmas) - 1):
            x = heun_step(score, process, x, sigmas[i], sigmas[i + 1])
        return x


# Karras et al. 2022, Table 5 (stochastic sampler settings): name -> (S_churn, S_min, S_max, S_noise)
EDM_SDE_PRESETS: dict[str, tuple[float, float, float, float]] = {
    "cifar10_vp": (30.0, 0.01, 1.0, 1.007),  # CIFAR-10, VP (Song et al. model)
    "cifar10_ve": (80.0, 0.05, 1.0, 1.007),  # CIFAR-10, VE (Song et al. model)
    "imagenet64_pre": (80.0, 0.05, 50.0, 1.003),  # ImageNet-64, pre-trained ADM model
    "imagenet64": (40.0, 0.05, 50.0, 1.003),  # ImageNet-64, EDM's own model (the EDM repo's example; our defaults)
}
_CHURN_KEYS = ("S_churn", "S_min", "S_max", "S_noise")


@register_sampler("edm_sde")
class EDMStochastic(EDMSampler):
    """Stochastic Heun sampler with churn, Karras et al. 2022, Algorithm 2.

    Step i: gamma_i = min(S_churn/N, sqrt(2) - 1) when S_min <= sigma_i <= S_max (else 0); raise the noise to
    sigma_hat = (1 + gamma_i) sigma_i by adding S_noise sqrt(sigma_hat^2 - sigma_i^2) xi; then a Heun step
    sigma_hat -> sigma_{i+1} (Euler on the last step to 0). NFE = 2N - 1. Defaults are the EDM repository's
    ImageNet-64 settings (S_churn 40, S_min 0.05, S_max 50, S_noise 1.003); ``preset`` picks a row of the paper's
    Table 5 (EDM_SDE_PRESETS, e.g. "cifar10_vp": 30 / 0.01 / 1 / 1.007). S_churn = 0 gives edm_heun exactly.
    A sigma_hat above the process's trained maximum is handled by ``sigma_hat_cap``: "clamp" (cap it there, with a
    warning naming the published and the capped value), "error" (refuse before sampling) or "none" (the published
    algorithm: evaluate the network above its trained range).
    """

    stochastic = True

    @dataclass
    class Options(EDMSampler.Options):
        S_churn: float = 40.0
        S_min: float = 0.05
        S_max: float = 50.0
        S_noise: float = 1.003
        preset: Literal["cifar10_vp", "cifar10_ve", "imagenet64_pre", "imagenet64"] | None = None
        sigma_hat_cap: Literal["clamp", "error", "none"] = "clamp"

    def __init__(self, nfe: int | None = None, steps: int | None = None, **options: Any) -> None:
        preset = options.get("preset")
        if preset in EDM_SDE_PRESETS:  # unknown names fail in the typed options check below
            fixed = dict(zip(_CHURN_KEYS, EDM_SDE_PRESETS[preset]))
            clash = {k: v for k, v in options.items() if k in fixed and v != fixed[k]}
            if clash:
                raise SamplerError(f"sampler 'edm_sde': preset {preset!r} fixes "
                                   f"{', '.join(f'{k}={fixed[k]}' for k in clash)}; got "
                                   f"{', '.join(f'{k}={v}' for k, v in clash.items())}; drop one of them")
            options = {**options, **fixed}
        super().__init__(nfe=nfe, steps=steps, **options)

    def _check_options(self) -> None:
        o = self.options
        if o.S_churn < 0 or o.S_noise < 0 or o.S_min < 0 or o.S_max < o.S_min:
            raise SamplerError(f"sampler 'edm_sde': need S_churn >= 0, S_noise >= 0 and 0 <= S_min <= S_max; got "
                               f"S_churn={o.S_churn}, S_noise={o.S_noise}, S_min={o.S_min}, S_max={o.S_max}")

    def nfe_for(self, steps: int) -> int:
        return 2 * steps - 1

    def gammas(self, sigmas: Tensor) -> list[float]:
        """Churn gamma_i for the N grid points (the trailing 0 excluded)."""
        o, n = self.options, len(sigmas) - 1
        g = min(o.S_churn / n, math.sqrt(2.0) - 1.0)
        return [g if o.S_min <= float(s) <= o.S_max else 0.0 for s in sigmas[:-1]]

    def sigma_hats(self, process: EDMView, sigmas: Tensor) -> Tensor:
        """sigma_hat_i = (1 + gamma_i) sigma_i, with ``sigma_hat_cap`` applied against the trained maximum."""
        hats = sigmas[:-1] * (1.0 + torch.tensor(self.gammas(sigmas), dtype=sigmas.dtype, device=sigmas.device))
        cap = process.sigma_range()[1]
        over = hats > torch.clamp(sigmas[:-1], min=cap)  # a grid point already above the cap is not churn's doing
        if not bool(over.any()) or self.options.sigma_hat_cap == "none":
            return hats
        i = int(over.nonzero()[0])
        what = (f"sigma_hat = {float(hats[i]):.6g} at step {i} (sigma {float(sigmas[i]):.6g}) exceeds the trained "
                f"sigma_max {cap:.6g} of {type(process).__name__}")
        if self.options.sigma_hat_cap == "error":
            raise SamplerError(f"sampler 'edm_sde': {what}; lower S_max or S_churn, or set sigma_hat_cap='clamp' "
                               f"(cap it) or 'none' (the published algorithm)")
        warnings.warn(f"sampler 'edm_sde': {what}; capped there (sigma_hat_cap='clamp'; 'none' keeps the "
                      f"published value, 'error' refuses)", RuntimeWarning, stacklevel=5)
        return torch.where(over, torch.clamp(sigmas[:-1], min=cap), hats)

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        hats = self.sigma_hats(process, sigmas)
        for i in range(len(sigmas) - 1):
            sigma, sigma_hat = sigmas[i], hats[i]
            xi = noise.randn_like(x)
            x = x + (self.options.S_noise * (sigma_hat**2 - sigma**2).sqrt()).to(x.dtype) * xi
            x = heun_step(score, process, x, sigma_hat, sigmas[i + 1])
        return x
