"""Exponential (conjugate) integrators for any linear process: exact linear part, multistep score part.

``exp_ode``: the PF-ODE in the flow frame of ``flow_frame.py`` (gDDIM, Zhang et al. 2023; conjugate integrators,
Pandey, Rudolph & Mandt 2024). Order 1 holds eps_R = -R_t^T score (or the denoised data D) constant over a
step and is DDIM on VE/VP; orders 2 and 3 are Adams-type: the last evaluations are interpolated by a polynomial
in ``tau`` (log-SNR for eps_R, t for D by default) and integrated exactly against the step kernel (DPM-Solver-style
multistep, lower order for the first steps). ``exp_sde``: the reverse SDE stepped by its exact Gaussian transition
for a point mass at the current denoised estimate (the forward bridge q(z_t' | z_t, x0): DDPM ancestral sampling on
VP), score held constant (order 1) or, in data form, a 2-step Adams correction (order 2, the default). Both work on
VE, VP and PSLD alike: only the process's per-coordinate matrices are used. 1 NFE per step, + 1 for the final Tweedie
step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..processes.base import Process
from . import register_sampler
from .base import CountedScore, SamplerError, TimeGridSampler
from .flow_frame import StepCoeffs, eta_coefficients, step_coefficients
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
        order: int = 3  # chosen by measurement: benchmarks/results/psld_integrators.md
        prediction: Literal["eps", "data"] = "eps"
        tau: Literal["logsnr", "t"] | None = None  # None: "logsnr" for eps, "t" for data (measured, see the results)
        clip_denoised: float | None = None

    def _check_options(self) -> None:
        o = self.options
        if not 1 <= o.order <= self.max_order:
            raise SamplerError(f"sampler {self.name!r}: order must be 1..{self.max_order}, got {o.order}")
        if o.clip_denoised is not None and not (o.clip_denoised > 0 and o.prediction == "data"):
            raise SamplerError(f"sampler {self.name!r}: clip_denoised must be a number > 0 and needs "
                               f"prediction='data', got clip_denoised={o.clip_denoised!r}, prediction={o.prediction!r}")

    def form(self) -> str:
        raise NotImplementedError

    def tau_kind(self) -> str:
        """Multistep interpolation variable: the option, else log-SNR for eps_R and t for the denoised data."""
        o = self.options
        return o.tau if o.tau is not None else ("t" if o.prediction == "data" else "logsnr")

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        ts = ts.to(torch.float64).cpu()
        o = self.options
        co = step_coefficients(process, ts, o.order, self.form(), self.tau_kind())
        frames = co.R if self.form() == "ode_eps" else None  # eps_R = -R^T score: the frame at the grid points
        data = self.form() != "ode_eps" and o.prediction == "data"
        a, L = process.marginal_coeffs(ts[:-1]) if data else (None, None)  # the denoiser's kernels, once per grid
        hist: list[Tensor] = []
        for i in range(len(ts) - 1):
            s = score(z, ts[i])
            if frames is not None:
                v = process.apply(-frames[i].transpose(-1, -2), s)
            elif data:
                v = process.denoise(z, ts[i], s, kernel=(a[i:i + 1].to(z.device), L[i:i + 1].to(z.device)))
                if o.clip_denoised is not None:  # thresholding: the data range bounds every step (no seed flies off)
                    v = v.clamp(-o.clip_denoised, o.clip_denoised)
            else:  # exp_sde, eps form: the score itself (order 1 only)
                v = s
            hist = [v] + hist[: o.order - 1]
            z = self.update(process, co, ts, i, z, hist, data, noise)
        return z

    def finish(self, score: CountedScore, process: Process, z: Tensor, t_end: Tensor) -> Tensor:
        """Tweedie step; with ``clip_denoised`` its estimate is clipped like every other one."""
        z = super().finish(score, process, z, t_end)
        c = self.options.clip_denoised
        if c is None or not self.options.final_denoise:
            return z
        parts = list(process.split(z))
        parts[0] = parts[0].clamp(-c, c)
        return process.join(parts)

    def update(self, process: Process, co: StepCoeffs, ts: Tensor, i: int, z: Tensor, hist: list[Tensor],
               data: bool, noise: NoiseSource) -> Tensor:
        """One step ts[i] -> ts[i+1] from the state and the history of stored values (newest first)."""
        p = int(co.orders[i])
        return _combine(process, co.M[i], z, [co.W[i, j] for j in range(p)], hist[:p], data)


# Budget-aware end time of exp_ode (``t_eps=None``): the process's t_eps_sample up to END_TIME_NFE, then
# t_eps_sample * (END_TIME_NFE / NFE)^2, never below t_eps_train (where the network's training stopped).
# Why: the final Tweedie step at t_eps shrinks every mode's spread by sigma^2(t_eps) = O(t_eps) (over-sharp), while
# the steps near the end grow with log(1 / t_eps); a converged solve can afford a later end. Chosen by measurement
# (signed log-likelihood gap, n = 2000; benchmarks/results/frontier.md, "End time of exp_ode"): on PSLD and VP image64
# the best fixed end time is 1e-3 at NFE <= 20, ~3e-4 at 35, 1e-4 at 50 and 3e-5..1e-4 at 100; the 2-D rings do not
# move beyond 1 SE. On VE t_eps_sample = t_eps_train, so nothing changes there. The same direction as the DPM-Solver
# authors' advice for continuous-time models (end at t = 1e-3 for <= 15 steps, 1e-4 beyond; Lu et al. 2022, README),
# made continuous in the budget.
END_TIME_NFE = 20


def budget_end_time(process: Process, nfe: int) -> float:
    """exp_ode's default end time at an NFE budget (see END_TIME_NFE)."""
    shrink = min(1.0, (END_TIME_NFE / max(nfe, 1)) ** 2)
    return max(float(process.t_eps_train), float(process.t_eps_sample) * shrink)


@register_sampler("exp_ode")
class ExponentialODE(_ExpBase):
    """Multistep exponential integrator of the PF-ODE in the flow frame (gDDIM / conjugate DDIM; Adams-type multistep).

    ``order`` 1 is DDIM on VE/VP and exact for a point-mass data law on every process; ``prediction`` "eps"
    keeps the network's two PSLD channels as they are, "data" projects them on a denoised x0 (DPM-Solver++-like).
    ``t_eps=None`` ends at a budget-aware time (``budget_end_time``): later for larger NFE budgets.
    """

    def form(self) -> str:
        return "ode_data" if self.options.prediction == "data" else "ode_eps"

    def end_time(self, process: Process) -> float:
        t_eps = self.options.t_eps
        return budget_end_time(process, self.nfe) if t_eps is None else t_eps


@register_sampler("exp_sde")
class ExponentialSDE(_ExpBase):
    """Exponential integrator of the reverse SDE: exact point-mass bridge per step (DDPM ancestral on VP).

    Order 1: z' = Phi z + (Phi Sigma_t - Sigma_t' Phi(t, t')^T) score + chol(C) xi, with the score as it is ("eps") or
    projected on a denoised x0 ("data"); ``eta`` < 1 (eps form, order 1) scales the noise down to eta^2 C and keeps
    the marginals of a point mass exact (DDIM-eta in the flow frame; eta = 0 is exp_ode order 1). Order 2 (data form;
    the default): the denoised estimate is interpolated linearly in t over the last two steps and integrated against
    the bridge kernel (SDE-DPM-Solver++-like).
    """

    stochastic = True
    max_order = 2

    @dataclass
    class Options(_ExpBase.Options):
        order: int = 2  # defaults chosen by measurement: benchmarks/results/psld_integrators.md
        prediction: Literal["eps", "data"] = "data"
        eta: float = 1.0

    def _check_options(self) -> None:
        super()._check_options()
        eta = self.options.eta
        if not (0 <= eta <= 1):
            raise SamplerError(f"sampler {self.name!r}: eta must be in [0, 1], got {eta!r}")
        if eta != 1.0 and (self.options.prediction != "eps" or self.options.order != 1):
            raise SamplerError(f"sampler {self.name!r}: eta != 1 needs prediction='eps' and order=1 "
                               f"(the data form is the bridge), got prediction={self.options.prediction!r}, "
                               f"order={self.options.order}")
        if self.options.order > 1 and self.options.prediction != "data":
            raise SamplerError(f"sampler {self.name!r}: order {self.options.order} needs prediction='data' "
                               f"(the eps form has order 1 only)")

    def form(self) -> str:
        return "sde_data"

    def update(self, process: Process, co: StepCoeffs, ts: Tensor, i: int, z: Tensor, hist: list[Tensor],
               data: bool, noise: NoiseSource) -> Tensor:
        if data:
            mean = super().update(process, co, ts, i, z, hist, data, noise)
            return mean + process.apply(co.noise[i], noise.randn_like(z))
        if self.options.eta == 1.0:  # z' = Phi z + (Phi Sigma_t - Sigma_t' Phi(t, t')^T) score: a_t D = z + Sigma_t s
            return (process.apply(co.M_eps[i], z) + process.apply(co.W_eps[i], hist[0])
                    + process.apply(co.noise[i], noise.randn_like(z)))
        Phi, W, K = eta_coefficients(process, ts, self.options.eta)  # memoised per grid
        return process.apply(Phi[i], z) + process.apply(W[i], hist[0]) + process.apply(K[i], noise.randn_like(z))
