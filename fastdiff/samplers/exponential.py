"""Exponential (conjugate) integrators for any linear process: exact linear part, multistep score part.

``exp_ode``: the PF-ODE in the flow frame of ``flow_frame.py`` (gDDIM, Zhang et al. 2023; conjugate integrators,
Pandey, Rudolph & Mandt 2024). Order 1 holds eps_R = -R_t^T score (or the denoised data D) constant over a
step and is DDIM on VE/VP; orders 2 and 3 are Adams-type: the last evaluations are interpolated by a polynomial
in log-SNR (``tau``) and integrated exactly against the step kernel (DPM-Solver-style multistep, lower order
for the first steps). ``exp_sde``: the reverse SDE stepped by its exact Gaussian transition for a point mass at
the current denoised estimate (the forward bridge q(z_t' | z_t, x0): DDPM ancestral sampling on VP), score held
constant (order 1) or, in data form, a 2-step Adams correction (order 2). Both work on VE, VP and PSLD alike:
only the process's per-coordinate matrices are used. 1 NFE per step, + 1 for the final Tweedie step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..processes.base import Process
from . import register_sampler
from .base import CountedScore, SamplerError, TimeGridSampler
from .flow_frame import FlowFrame
from .noise import NoiseSource


def _combine(process: Process, M: Tensor, z: Tensor, weights: list[Tensor], values: list[Tensor], data: bool) -> Tensor:
    """M z + sum_j W_j v_j; data-form values are data-shaped and W_j a [k, 1] column (one weight per block row)."""
    out = process.apply(M, z)
    for W, v in zip(weights, values):
        if data:
            out = out + process.join([W[r, 0].to(z.dtype) * v for r in range(process.k)])
        else:
            out = out + process.apply(W, v)
    return out


class _ExpBase(TimeGridSampler):
    """Shared options and history bookkeeping of the exponential integrators."""

    default_steps = 20
    max_order = 3

    @dataclass
    class Options(TimeGridSampler.Options):
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "quadratic"
        order: int = 2
        prediction: Literal["eps", "data"] = "eps"
        tau: Literal["logsnr", "t"] = "logsnr"

    def _check_options(self) -> None:
        o = self.options
        if not 1 <= o.order <= self.max_order:
            raise SamplerError(f"sampler {self.name!r}: order must be 1..{self.max_order}, got {o.order}")

    def form(self) -> str:
        raise NotImplementedError

    def value(self, process: Process, ff: FlowFrame, z: Tensor, t: Tensor, s: Tensor, R: Tensor | None) -> Tensor:
        """What the multistep history stores: the denoised data D, or eps_R = -R^T score."""
        if self.options.prediction == "data":
            return process.denoise(z, t, s)
        return process.apply(-R.transpose(-1, -2), s)

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        ts = ts.to(torch.float64).cpu()
        ff = FlowFrame(process, self.options.tau)
        theta = ff.thetas(ts) if self.form().startswith("ode") else torch.zeros_like(ts)
        data = self.options.prediction == "data"
        hist: list[Tensor] = []
        for i in range(len(ts) - 1):
            s = score(z, ts[i])
            R = ff.frame(ts[i:i + 1], theta[i:i + 1]) if not data else None
            hist = [self.value(process, ff, z, ts[i], s, R)] + hist[: self.options.order - 1]
            idx = [i - j for j in range(len(hist))]
            z = self.update(process, ff, z, ts, i, idx, theta, hist, s, noise)
        return z

    def update(self, process: Process, ff: FlowFrame, z: Tensor, ts: Tensor, i: int, idx: list[int], theta: Tensor,
               hist: list[Tensor], s: Tensor, noise: NoiseSource) -> Tensor:
        M, W = ff.weights(ts, i, idx, theta, self.form())
        return _combine(process, M, z, W, hist, self.options.prediction == "data")


@register_sampler("exp_ode")
class ExponentialODE(_ExpBase):
    """Multistep exponential integrator of the PF-ODE in the flow frame (gDDIM / conjugate DDIM; Adams in log-SNR).

    ``order`` 1 is DDIM on VE/VP and exact for a point-mass data law on every process; ``prediction`` "eps"
    keeps the network's two PSLD channels as they are, "data" projects them on a denoised x0 (DPM-Solver++-like).
    """

    def form(self) -> str:
        return "ode_data" if self.options.prediction == "data" else "ode_eps"


@register_sampler("exp_sde")
class ExponentialSDE(_ExpBase):
    """Exponential integrator of the reverse SDE: exact point-mass bridge per step (DDPM ancestral on VP).

    Order 1 (default): z' = Phi z + (Phi Sigma_t - Sigma_t' Phi(t, t')^T) score + chol(C) xi, with the score as it
    is ("eps") or projected on a denoised x0 ("data"). Order 2 (data only): the denoised estimate is linearly
    interpolated in log-SNR over the last two steps and integrated against the bridge kernel (SDE-DPM-Solver++-like).
    """

    stochastic = True
    max_order = 2

    @dataclass
    class Options(_ExpBase.Options):
        order: int = 1

    def _check_options(self) -> None:
        super()._check_options()
        if self.options.order > 1 and self.options.prediction != "data":
            raise SamplerError(f"sampler {self.name!r}: order {self.options.order} needs prediction='data' "
                               f"(the eps form has order 1 only)")

    def form(self) -> str:
        return "sde_data"

    def value(self, process: Process, ff: FlowFrame, z: Tensor, t: Tensor, s: Tensor, R: Tensor | None) -> Tensor:
        return process.denoise(z, t, s) if self.options.prediction == "data" else s

    def update(self, process: Process, ff: FlowFrame, z: Tensor, ts: Tensor, i: int, idx: list[int], theta: Tensor,
               hist: list[Tensor], s: Tensor, noise: NoiseSource) -> Tensor:
        t, tn = ts[i:i + 1], ts[i + 1:i + 2]
        if self.options.prediction == "data":
            M, W = ff.weights(ts, i, idx, theta, "sde_data")
            mean = _combine(process, M, z, W, hist, True)
        else:
            Phi = ff.phi(tn, t)[0]
            S_t, S_n = ff._cov(t)[0], ff._cov(tn)[0]
            A_back = process.transition_coeffs(tn, t)[0][0]  # Phi(t, t')
            mean = process.apply(Phi, z) + process.apply(Phi @ S_t - S_n @ A_back.T, s)
        return mean + process.apply(ff.bridge_noise(t, tn), noise.randn_like(z))
