"""Restart sampling in the EDM view (Xu et al. 2023, Algorithm 2): the variant for VE/VP (``edm_view`` processes).

The main pass is ``edm_heun`` over ``steps`` = N_main Karras sigmas (the last step, to sigma = 0, is Euler);
interval bounds are noise levels sigma. After the main step that lands on a snapped t_min, K times: jump
x <- x + S_noise sqrt(t_max^2 - t_min^2) xi (no NFE), then Heun down a Karras grid of N_restart points from t_max to
t_min, with EDM churn (sigma_hat = (1 + restart_gamma) sigma) at steps whose sigma lies in [S_min, S_max].
Registered through the ``restart`` factory (restart.py), which picks this variant on EDM-view processes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..processes.base import EDMView
from .base import CountedScore
from .edm import EDMSampler, heun_step
from .grids import karras_sigmas
from .noise import NoiseSource
from .restart_intervals import (PlannedRestart, RestartBudget, RestartFields, churn_on, restart_info, snap)


class RestartSigma(RestartBudget, EDMSampler):
    """Restart sampling, Xu et al. 2023, Algorithm 2 (EDM view, sigma units)."""

    @dataclass
    class Options(RestartFields, EDMSampler.Options):
        pass

    def main_grid(self, process: EDMView, device: torch.device | str = "cpu") -> Tensor:
        """Karras sigmas of the main pass with 0 appended (float64)."""
        return self.sigmas(process, torch.device(device))

    def restart_plan(self, process: EDMView) -> dict[int, PlannedRestart]:
        """The intervals resolved on the main grid: {main-grid index: planned restart} (float64, CPU)."""
        o = self.options
        landed = self.main_grid(process)[1:self.steps]  # points reached by a main step (not the start, not 0)
        plan = {}
        for idx, (iv, lo) in snap(landed, self.intervals, "sigma").items():
            grid = karras_sigmas(iv.n_restart, lo, iv.t_max, o.rho)
            grid[0], grid[-1] = iv.t_max, lo
            churn = torch.where(churn_on(grid, o), grid * (1 + o.restart_gamma), grid)
            plan[idx] = PlannedRestart(idx, iv, lo, grid, churn)
        return plan

    def run(self, score: CountedScore, process: EDMView, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> tuple[Tensor, dict[str, Any]]:
        plan = self.restart_plan(process)
        sigmas = self.sigmas(process, device)
        x = self.start(shape, sigmas[0], noise, device)
        last = len(sigmas) - 1 if self.options.final_denoise else len(sigmas) - 2
        for i in range(last):
            x = heun_step(score, process, x, sigmas[i], sigmas[i + 1])
            if i + 1 in plan:
                x = self.restart(score, process, x, plan[i + 1], noise)
        if not self.options.final_denoise:  # stopped at the last positive sigma: return the process state
            s = process.scale(process.t_of_sigma(sigmas[last].reshape(1)))
            x = x * s.to(x.dtype).to(x.device)
        return x, restart_info("sigma", plan)

    def restart(self, score: CountedScore, process: EDMView, x: Tensor, p: PlannedRestart,
                noise: NoiseSource) -> Tensor:
        """K times: jump from t_min up to t_max with fresh noise, then Heun down the descent grid (with churn)."""
        o, dev = self.options, x.device
        grid, churn = p.grid.to(dev), p.churn.to(dev)
        jump = o.S_noise * math.sqrt(p.interval.t_max**2 - p.t_min**2)
        for _ in range(p.interval.k):
            x = x + jump * noise.randn_like(x)
            for j in range(len(grid) - 1):
                hat = churn[j]
                if hat > grid[j]:
                    x = x + o.S_noise * torch.sqrt(hat**2 - grid[j] ** 2).to(x.dtype) * noise.randn_like(x)
                x = heun_step(score, process, x, hat, grid[j + 1])
        return x
