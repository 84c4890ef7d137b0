"""DPM-Solver++(2S) with ancestral noise: k-diffusion's dpmpp_sde (Lu et al. 2022, singlestep second order)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..processes.base import EDMView
from . import register_sampler
from .base import CountedScore, SamplerError
from .edm import GridEDMSampler, SigmaGrid, edm_denoise
from .noise import NoiseSource


def ancestral_split(sigma_from: float, sigma_to: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): a step sigma_from -> sigma_to as a deterministic step to sigma_down plus fresh noise
    of std sigma_up, sigma_down^2 + sigma_up^2 = sigma_to^2; eta = 1 is the ancestral (DDPM posterior) amount."""
    up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    return math.sqrt(sigma_to**2 - up**2), up


@register_sampler("dpmpp_sde")
class DPMSolverPPSDE(GridEDMSampler):
    """DPM-Solver++(2S) SDE (Lu et al. 2022; k-diffusion's dpmpp_sde): two evaluations per step.

    For sigma -> sigma' with lambda = -log sigma, h = lambda' - lambda, the stage point sigma_s has
    lambda_s = lambda + r h. Stage 1: first-order data-prediction step to sigma_down of (sigma -> sigma_s) plus
    sigma_up xi_1; stage 2: the same from x̃ to sigma' with D_d = (1 - 1/(2r)) D(x̃, sigma) + 1/(2r) D(x̃_s, sigma_s).
    xi_1 and xi_2 are the normalised increments of one Brownian path in sigma over [sigma_s, sigma] and
    [sigma', sigma] (built from two draws per step of the sample's own stream: no Brownian tree is needed, and
    the law equals k-diffusion's). The last step to sigma = 0 returns D. NFE = 2 steps - 1; eta = 0 is the
    deterministic DPM-Solver++(2S). Default grid log-SNR-uniform (by measurement:
    benchmarks/results/fast_solvers.md).
    """

    stochastic = True

    @dataclass
    class Options(GridEDMSampler.Options):
        grid: SigmaGrid = "logsnr"
        eta: float = 1.0
        s_noise: float = 1.0
        r: float = 0.5

    def _check_options(self) -> None:
        o = self.options
        if not (o.eta >= 0 and o.s_noise >= 0 and 0 < o.r <= 1):
            raise SamplerError(f"sampler {self.name!r}: need eta >= 0, s_noise >= 0 and 0 < r <= 1, got eta={o.eta}, "
                               f"s_noise={o.s_noise}, r={o.r}")

    def nfe_for(self, steps: int) -> int:
        return 2 * steps - 1

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        o = self.options
        noisy = o.eta > 0 and o.s_noise > 0
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            d = edm_denoise(score, process, x, sigmas[i])
            if sigma_next == 0.0:
                return d
            sigma_s = sigma * (sigma_next / sigma) ** o.r  # lambda_s = lambda + r h
            if noisy:
                xa, xb = noise.randn_like(x), noise.randn_like(x)
                # Brownian path in sigma: W(sigma_s) - W(sigma) and W(sigma') - W(sigma), each normalised
                w1, w2 = math.sqrt(sigma - sigma_s), math.sqrt(sigma_s - sigma_next)
                xi1, xi2 = xa, (w1 * xa + w2 * xb) / math.sqrt(sigma - sigma_next)
            down, up = ancestral_split(sigma, sigma_s, o.eta)
            x2 = (down / sigma) * x + (1.0 - down / sigma) * d
            if noisy:
                x2 = x2 + (up * o.s_noise) * xi1
            d2 = edm_denoise(score, process, x2, sigmas.new_tensor(sigma_s))
            fac = 1.0 / (2.0 * o.r)
            d_mix = (1.0 - fac) * d + fac * d2
            down, up = ancestral_split(sigma, sigma_next, o.eta)
            x = (down / sigma) * x + (1.0 - down / sigma) * d_mix
            if noisy:
                x = x + (up * o.s_noise) * xi2
        return x
