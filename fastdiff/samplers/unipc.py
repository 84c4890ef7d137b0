"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"): UniP-p predictor + UniC corrector."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..processes.base import EDMView
from . import register_sampler
from .base import CountedScore, SamplerError
from .edm import GridEDMSampler, SigmaGrid, edm_denoise
from .grids import EDM_SIGMA_MIN
from .noise import NoiseSource


def unipc_coefficients(rks: list[float], h: float, variant: str) -> tuple[float, Tensor, Tensor]:
    """(B(h), rhos_p, rhos_c) of UniPC's data-prediction update for order p = len(rks) + 1.

    rks = (lambda_{i-k} - lambda_i) / h for the p - 1 older evaluations. With hh = -h and
    phi_k the exponential-integrator functions, b_k = k! h phi_{k+1}(hh) / B(h) (Zhao et al. 2023, Eq. 8; B(h) = hh
    for bh1, e^{hh} - 1 for bh2); R_{jk} = r_k^{j-1} with r_p = 1. The predictor solves the first p - 1 moment
    conditions (p = 2: rho = 1/2), the corrector all p (p = 1: rho = 1/2).
    """
    p = len(rks) + 1
    hh = -h
    h_phi_k = math.expm1(hh) / hh - 1.0
    factorial = 1
    bh = hh if variant == "bh1" else math.expm1(hh)
    b = []
    for k in range(1, p + 1):
        b.append(h_phi_k * factorial / bh)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    r = torch.tensor(rks + [1.0], dtype=torch.float64)
    R = torch.stack([r**k for k in range(p)])
    bt = torch.tensor(b, dtype=torch.float64)
    rhos_p = torch.zeros(0, dtype=torch.float64)  # order 1: UniP-1 is DPM-Solver++(1), no differences
    if p == 2:
        rhos_p = torch.tensor([0.5], dtype=torch.float64)
    elif p > 2:
        rhos_p = torch.linalg.solve(R[:-1, :-1], bt[:-1])
    rhos_c = torch.tensor([0.5], dtype=torch.float64) if p == 1 else torch.linalg.solve(R, bt)
    return bh, rhos_p, rhos_c


# Budget-aware end of unipc (``sigma_min=None``): the last nonzero noise level is LOW_BUDGET_END_SIGMA up to
# LOW_BUDGET_NFE, EDM's 0.002 beyond (both clipped to the process's range; VE's floor is 0.01, so VE is unchanged).
# Why: at a few steps the log-SNR span down to 0.002 costs more accuracy in the last steps than the final denoise
# from 0.01 loses. It is the DPM-Solver authors' advice for continuous-time VP models (t_end = 1e-3, sigma 0.0105,
# for <= 15 steps; Lu et al. 2022, README). Measured (benchmarks/results/frontier.md, "End of unipc"): on the VP
# mixtures, the trained VP toy2d and the VP digits networks, ending at 0.0105 lowers the pathwise error at every
# budget 5-20 and the |gap| at most of them (VP digits NFE 5: fd +1.22 vs +5.36); deis did not gain, so it is unipc's.
LOW_BUDGET_END_SIGMA = 0.01
LOW_BUDGET_NFE = 20


def budget_end_sigma(nfe: int) -> float:
    """unipc's default smallest nonzero noise level at an NFE budget (see LOW_BUDGET_END_SIGMA)."""
    return LOW_BUDGET_END_SIGMA if nfe <= LOW_BUDGET_NFE else EDM_SIGMA_MIN


@register_sampler("unipc")
class UniPC(GridEDMSampler):
    """UniPC multistep in the EDM view (Zhao et al. 2023, Alg. 2/3 with data prediction, B(h) = bh1 or bh2).

    Step sigma_i -> sigma_{i+1} with h = log(sigma_i / sigma_{i+1}), D_k the denoiser at the k-th grid point:
      base x̃' = (sigma_{i+1}/sigma_i) x̃ + (1 - e^{-h}) D_i; D1_k = (D_{i-k} - D_i) / r_k;
      UniP-p: x̃_pred = base - B(h) sum_k rho^p_k D1_k;
      UniC-p: D_{i+1} = D(x̃_pred, sigma_{i+1}) (the next step reuses it: no extra evaluation), then
              x̃ = base - B(h) (sum_k rho^c_k D1_k + rho^c_p (D_{i+1} - D_i)), order p + 1.
    Warm-up orders 1, 2, ..; with ``lower_order_final`` the step before the final sigma = 0 denoising uses order
    <= 2 (UniPC's lower_order_final); that step has no corrector (its evaluation is the final D). NFE = steps.
    Defaults (log-SNR grid, order 2, bh2) chosen by measurement: benchmarks/results/fast_solvers.md.
    ``sigma_min=None`` (the default) ends at a budget-aware noise level (``budget_end_sigma``): later at low NFE.
    """

    @dataclass
    class Options(GridEDMSampler.Options):
        sigma_min: float | None = None  # None: budget_end_sigma(NFE)
        grid: SigmaGrid = "logsnr"
        order: int = 2
        variant: Literal["bh1", "bh2"] = "bh2"
        corrector: bool = True
        lower_order_final: bool = True

    def _check_options(self) -> None:
        if not 1 <= self.options.order <= 4:
            raise SamplerError(f"sampler {self.name!r}: order must be 1, 2, 3 or 4, got {self.options.order}")

    def nfe_for(self, steps: int) -> int:
        return steps

    def end_sigma(self) -> float:
        o = self.options
        return budget_end_sigma(self.nfe) if o.sigma_min is None else o.sigma_min

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        o, n = self.options, len(sigmas) - 1
        ds = [edm_denoise(score, process, x, sigmas[0])]  # newest first
        lams = [-math.log(float(sigmas[0]))]
        for i in range(n):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            if sigma_next == 0.0:
                return ds[0]
            p = min(o.order, i + 1, n - i) if o.lower_order_final else min(o.order, i + 1)
            h = math.log(sigma / sigma_next)
            rks = [(lams[k] - lams[0]) / h for k in range(1, p)]
            bh, rhos_p, rhos_c = unipc_coefficients(rks, h, o.variant)
            d1s = [(ds[k] - ds[0]) / rks[k - 1] for k in range(1, p)]
            base = (sigma_next / sigma) * x - math.expm1(-h) * ds[0]
            x_new = base - bh * sum(float(c) * d for c, d in zip(rhos_p, d1s)) if d1s else base
            d_new = edm_denoise(score, process, x_new, sigmas[i + 1])
            if o.corrector and float(sigmas[i + 2]) > 0.0:
                corr = sum(float(c) * d for c, d in zip(rhos_c[:-1], d1s)) if d1s else 0.0
                x_new = base - bh * (corr + float(rhos_c[-1]) * (d_new - ds[0]))
            x = x_new
            ds = [d_new] + ds[: o.order - 1]
            lams = [-math.log(sigma_next)] + lams[: o.order - 1]
        return x
