"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++") in the EDM view: 2M, 3M and their SDE forms.

Data-prediction exponential integrators in lambda = -log sigma (in the EDM view x̃ = x / s(t) the signal scale is
1). For a step sigma -> sigma' with h = log(sigma / sigma') and h_eta = (1 + eta) h:

    x̃' = (sigma'/sigma) e^{-eta h} x̃ + (1 - e^{-h_eta}) D_0 + [order-2/3 terms] + sigma' sqrt(1 - e^{-2 eta h}) xi,

where the denoiser D is expanded as a polynomial in lambda through the last k evaluations and the linear part is
integrated exactly. eta = 0 is the probability-flow solver DPM-Solver++(kM); eta > 0 is SDE-DPM-Solver++ (Lu et
al. 2022, Sec. 5), eta = 1 being the reverse SDE. One evaluation per grid point (NFE = steps); the step to
sigma = 0 returns D (the h -> inf limit); the first steps use lower order (only i + 1 evaluations are known).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..processes.base import EDMView
from . import register_sampler
from .base import CountedScore, SamplerError
from .edm import GridEDMSampler, SigmaGrid, edm_denoise
from .noise import NoiseSource


def dpmpp_step(x: Tensor, ds: list[Tensor], hs: list[float], sigma: float, sigma_next: float, order: int,
               eta: float = 0.0, midpoint: bool = True, taylor_d2: bool = True) -> Tensor:
    """Noise-free part of one DPM-Solver++ multistep update sigma -> sigma' > 0.

    ds = [D_i, D_{i-1}, D_{i-2}] and hs = [h_i, h_{i-1}, h_{i-2}] newest first (h_i is this step). Order 2 uses
    DPM-Solver's midpoint form 0.5 (1 - e^{-h_eta}) D1 (``midpoint``) or the Taylor form phi_2 D1; order 3 the
    DPM-Solver++(3M) divided differences with phi_2 = 1 - (1 - e^{-h_eta}) / h_eta and phi_3 = phi_2 / h_eta - 1/2:
    x̃' += phi_2 D1 - phi_3 D2 with D1 ~ h D' and D2 ~ h^2 D'' (``taylor_d2``; the exact integral of the Taylor
    term D'' tau^2 / 2 against e^{tau - h} is -phi_3 h^2 D''). The published code (DPM-Solver, diffusers,
    k-diffusion's dpmpp_3m_sde) uses D2 ~ h^2 D'' / 2, half the weight, which leaves the method second order
    (measured in tests/test_fast_samplers.py); ``taylor_d2=False`` reproduces it.
    """
    h = math.log(sigma / sigma_next)
    he = (1.0 + eta) * h
    one_minus = -math.expm1(-he)
    out = (sigma_next / sigma * math.exp(-eta * h)) * x + one_minus * ds[0]
    if order == 1:
        return out
    r0 = hs[1] / h
    d1_0 = (ds[0] - ds[1]) / r0  # h * dD/dlambda, first divided difference
    phi2 = math.expm1(-he) / he + 1.0
    if order == 2:
        return out + (0.5 * one_minus if midpoint else phi2) * d1_0
    r1 = hs[2] / h
    d1_1 = (ds[1] - ds[2]) / r1
    d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
    d2 = (d1_0 - d1_1) / (r0 + r1)  # h^2 D'' / 2
    if taylor_d2:
        d2 = 2.0 * d2
    phi3 = phi2 / he - 0.5
    return out + phi2 * d1 - phi3 * d2


class DPMSolverPPMultistep(GridEDMSampler):
    """Shared loop of the DPM-Solver++ multistep family (one D evaluation per grid point, history of k)."""

    max_order: ClassVar[int] = 2
    midpoint: ClassVar[bool] = True

    def nfe_for(self, steps: int) -> int:
        return steps

    def noise_level(self) -> tuple[float, float]:
        """(eta, s_noise); the ODE solvers add no noise."""
        return 0.0, 0.0

    def step_order(self, i: int, n: int) -> int:
        """Order of step i of n: warm-up with what is known (i + 1 evaluations)."""
        return min(self.max_order, i + 1)

    def taylor_d2(self) -> bool:
        return True

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        eta, s_noise = self.noise_level()
        n = len(sigmas) - 1
        ds: list[Tensor] = []
        hs: list[float] = []
        for i in range(n):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            ds = [edm_denoise(score, process, x, sigmas[i])] + ds[: self.max_order - 1]
            if sigma_next == 0.0:
                return ds[0]
            hs = [math.log(sigma / sigma_next)] + hs[: self.max_order - 1]
            x = dpmpp_step(x, ds, hs, sigma, sigma_next, self.step_order(i, n), eta, self.midpoint,
                           self.taylor_d2())
            if eta > 0 and s_noise > 0:
                x = x + (sigma_next * math.sqrt(-math.expm1(-2.0 * eta * hs[0])) * s_noise) * noise.randn_like(x)
        return x


def check_noise_options(name: str, eta: float, s_noise: float) -> None:
    if not (eta >= 0 and s_noise >= 0 and math.isfinite(eta) and math.isfinite(s_noise)):
        raise SamplerError(f"sampler {name!r}: need eta >= 0 and s_noise >= 0, got eta={eta}, s_noise={s_noise}")


class SDENoise:
    """Mixin of the SDE variants: their options carry ``eta`` and ``s_noise``, checked and reported here once."""

    stochastic = True

    def _check_options(self) -> None:
        check_noise_options(self.name, self.options.eta, self.options.s_noise)

    def noise_level(self) -> tuple[float, float]:
        return self.options.eta, self.options.s_noise


@register_sampler("dpmpp_2m")
class DPMSolverPP2M(DPMSolverPPMultistep):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in the EDM view, midpoint form; default Karras grid.

    x̃' = (sigma'/sigma) x̃ + (1 - sigma'/sigma) ((1 + 1/(2r)) D_i - 1/(2r) D_{i-1}), r = h_{i-1} / h_i.
    """


@register_sampler("dpmpp_3m")
class DPMSolverPP3M(DPMSolverPPMultistep):
    """DPM-Solver++(3M) (Lu et al. 2022, multistep third order; k-diffusion's dpmpp_3m_sde at eta = 0).

    Warm-up with orders 1, 2 (Taylor form); with ``lower_order_final`` the step before the final sigma = 0
    denoising uses order 2 (DPM-Solver's remedy for the instability of high orders at few steps).
    ``taylor_d2``: the third-order weight of the second difference; False (default): the published code's half
    weight (see :func:`dpmpp_step`), asymptotically second order but better at NFE <= 15 on the benchmark's
    oracle. Default grid: log-SNR-uniform (defaults chosen by measurement: benchmarks/results/fast_solvers.md).
    """

    max_order = 3
    midpoint = False

    @dataclass
    class Options(DPMSolverPPMultistep.Options):
        grid: SigmaGrid = "logsnr"
        lower_order_final: bool = True
        taylor_d2: bool = False

    def taylor_d2(self) -> bool:
        return self.options.taylor_d2

    def step_order(self, i: int, n: int) -> int:
        order = super().step_order(i, n)
        # steps left including the final jump to sigma = 0 (itself first order): n - i
        return min(order, n - i) if self.options.lower_order_final else order


@register_sampler("dpmpp_2m_sde")
class DPMSolverPP2MSDE(SDENoise, DPMSolverPP2M):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, Sec. 5; k-diffusion's dpmpp_2m_sde, midpoint form).

    eta = 1 discretises the reverse SDE, eta = 0 is dpmpp_2m; noise sigma' sqrt(1 - e^{-2 eta h}) s_noise xi from
    each sample's own stream (independent steps need no Brownian tree). Default grid: log-SNR-uniform (by
    measurement: benchmarks/results/fast_solvers.md).
    """

    @dataclass
    class Options(DPMSolverPP2M.Options):
        grid: SigmaGrid = "logsnr"
        eta: float = 1.0
        s_noise: float = 1.0


@register_sampler("dpmpp_3m_sde")
class DPMSolverPP3MSDE(SDENoise, DPMSolverPP3M):
    """SDE-DPM-Solver++(3M) (k-diffusion's dpmpp_3m_sde): the 3M update with h_eta = (1 + eta) h plus noise."""

    @dataclass
    class Options(DPMSolverPP3M.Options):
        eta: float = 1.0
        s_noise: float = 1.0
