"""Restart sampling in t for any process (the variant PSLD runs; optional on VE/VP): exact forward kernel jumps.

The main pass is probability-flow Heun in t on a time grid of N_main points ending at t_eps, then a Tweedie denoise
(``final_denoise``); interval bounds are *times*; the forward jump is the exact kernel
``process.transition(z, t_min, t_max)`` (noise scaled by S_noise) and the restart descent is PF-ODE Heun in t.
Default intervals are the sigma defaults mapped to times through sigma_eff = exp(-logSNR / 2); churn raises
sigma_eff by (1 + restart_gamma) at descent steps whose sigma_eff lies in [S_min, S_max]. No published system offers
Restart on augmented processes. Registered through the ``restart`` factory (restart.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..processes.base import Process
from .base import CountedScore, SamplerError, TimeGridSampler
from .grids import karras_sigmas, t_of_log_snr, time_grid
from .noise import NoiseSource
from .restart_intervals import (Interval, PlannedRestart, RestartBudget, RestartFields, churn_on, restart_info, snap)


def sigma_eff(process: Process, t: Tensor) -> Tensor:
    """exp(-logSNR(t) / 2): the EDM sigma on VE/VP, the data coordinate's noise-to-signal ratio in general."""
    return torch.exp(-0.5 * process.log_snr(t))


def t_of_sigma_eff(process: Process, sig: Tensor, t_lo: float, t_hi: float) -> Tensor:
    """Time at which sigma_eff equals ``sig`` (clamped to [t_lo, t_hi])."""
    return t_of_log_snr(process, -2 * torch.log(sig), t_lo, t_hi)


def descent_grid(kind: str, process: Process, t_hi: float, t_lo: float, n: int, rho: float) -> Tensor:
    """n decreasing times from t_hi to t_lo shaped like the main time grid ``kind`` (float64)."""
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    if kind == "uniform":
        t = t_hi - (t_hi - t_lo) * i
    elif kind == "quadratic":
        t = t_hi - (t_hi - t_lo) * (1 - (1 - i) ** 2)
    else:
        lam_small = process.log_snr(torch.tensor([t_hi], dtype=torch.float64))
        lam_big = process.log_snr(torch.tensor([t_lo], dtype=torch.float64))
        if kind == "logsnr":
            lam = lam_small + (lam_big - lam_small) * i
        else:
            sig = karras_sigmas(n, math.exp(-0.5 * lam_big.item()), math.exp(-0.5 * lam_small.item()), rho)
            lam = -2 * torch.log(sig)
        t = t_of_log_snr(process, lam, t_lo, t_hi)
    t[0], t[-1] = t_hi, t_lo
    return t


def heun_t_step(score: CountedScore, process: Process, z: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    """One Heun step of the probability-flow ODE dz/dt = f - G G^T score / 2 from t down to t_next (2 NFE)."""
    h = (t_next - t).to(z.dtype)
    d1 = process.reverse_drift(z, t, score(z, t), prob_flow=True)
    z1 = z + h * d1
    d2 = process.reverse_drift(z1, t_next, score(z1, t_next), prob_flow=True)
    return z + 0.5 * h * (d1 + d2)


class RestartT(RestartBudget, TimeGridSampler):
    """Restart sampling (Xu et al. 2023) in t: PF-ODE Heun main pass and descents, exact-kernel forward jumps."""

    @dataclass
    class Options(RestartFields, TimeGridSampler.Options):
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "karras"

    def main_grid(self, process: Process, device: torch.device | str = "cpu") -> Tensor:
        """N_main decreasing times T .. t_eps (float64)."""
        o = self.options
        return time_grid(o.grid, process, self.steps - 1, o.t_eps, o.rho, device)

    def grid(self, process: Process, device: torch.device) -> Tensor:
        return self.main_grid(process, device)

    def restart_plan(self, process: Process, main: Tensor | None = None) -> dict[int, PlannedRestart]:
        """The intervals resolved on the main grid (``main_grid``, passed when the caller has it): {main-grid
        index: planned restart} (float64, CPU)."""
        o = self.options
        main = self.main_grid(process) if main is None else main.cpu()
        t_lo, T = float(main[-1]), float(process.T)
        intervals = self.intervals
        if o.intervals is None:  # the sigma-unit default interval -> times with the same sigma_eff (one inversion)
            ends = t_of_sigma_eff(process, torch.tensor([v for iv in intervals for v in (iv.t_min, iv.t_max)],
                                                        dtype=torch.float64), t_lo, T).tolist()
            intervals = [Interval(iv.n_restart, iv.k, ends[2 * i], ends[2 * i + 1]) for i, iv in enumerate(intervals)]
        for iv in intervals:
            if iv.t_max > T:
                raise SamplerError(f"sampler {self.name!r}: restart t_max {iv.t_max} exceeds the process horizon "
                                   f"T = {T} (in space='t' interval bounds are times)")
        plan = {}
        for idx, (iv, lo) in snap(main[1:self.steps], intervals, "t").items():
            grid = descent_grid(o.grid, process, iv.t_max, lo, iv.n_restart, o.rho)
            level = sigma_eff(process, grid)
            on = churn_on(level, o)
            churn = grid.clone()
            if bool(on.any()):
                raised = t_of_sigma_eff(process, level * (1 + o.restart_gamma), 0.0, T)
                churn = torch.where(on, torch.maximum(raised, grid), grid)
            plan[idx] = PlannedRestart(idx, iv, lo, grid, churn)
        return plan

    def run(self, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> tuple[Tensor, dict[str, Any]]:
        main = self.main_grid(process)  # its inversion (PSLD) is the costly part of the plan: formed once
        plan = self.restart_plan(process, main)
        ts = main.to(device)
        z = self.prior(process, shape, noise, device)
        for i in range(len(ts) - 1):
            z = heun_t_step(score, process, z, ts[i], ts[i + 1])
            if i + 1 in plan:
                z = self.restart(score, process, z, plan[i + 1], noise)
        return self.finish(score, process, z, ts[-1]), restart_info("t", plan)

    def restart(self, score: CountedScore, process: Process, z: Tensor, p: PlannedRestart,
                noise: NoiseSource) -> Tensor:
        """K times: exact forward kernel t_min -> t_max (noise scaled by S_noise), then PF-ODE Heun back down."""
        o, dev = self.options, z.device
        grid, churn = p.grid.to(dev), p.churn.to(dev)
        for _ in range(p.interval.k):
            z = process.transition(z, grid[-1], grid[0], o.S_noise * noise.randn_like(z))
            for j in range(len(grid) - 1):
                hat = churn[j]
                if hat > grid[j]:
                    z = process.transition(z, grid[j], hat, o.S_noise * noise.randn_like(z))
                z = heun_t_step(score, process, z, hat, grid[j + 1])
        return z

