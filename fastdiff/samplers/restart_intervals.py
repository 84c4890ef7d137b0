"""Restart sampling (Xu et al. 2023): what both variants share — intervals, snapping, churn ranges, NFE, presets.

An interval ``[N_restart, K, t_min, t_max]`` runs K restarts after the main step that lands on t_min (snapped to the
nearest main-grid point; t_max is not snapped): a forward jump t_min -> t_max, then a Heun descent of N_restart
points back down. Counted NFE = 2 (N_main - 1) + final_denoise + sum_i K_i * 2 (N_restart_i - 1) in both variants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .base import SamplerError

DEFAULT_INTERVALS: list[list[float]] = [[3, 2, 0.06, 0.30]]  # the paper's CIFAR-10 VP interval (sigma units)

# The published CIFAR-10 runs (github.com/Newbeeer/diffusion_restart_sampling): intervals and N_main from
# benchmarks/params_cifar10_vp.txt (the paper's Table 3); the command in benchmarks/README.md passes
# --S_min=0.01 --S_max=1 --S_noise 1., and generate_restart.py's --restart_gamma defaults to 0.05 (EDM churn inside
# the restart steps). The paper's Algorithm 2 alone is restart_gamma = 0: give the intervals without a preset.
PUBLISHED_CHURN: dict[str, float] = {"restart_gamma": 0.05, "S_min": 0.01, "S_max": 1.0, "S_noise": 1.0}
PRESETS: dict[str, tuple[int, list[list[float]]]] = {  # name -> (N_main, intervals); churn: PUBLISHED_CHURN
    "vp_43": (18, [[3, 2, 0.06, 0.30]]),  # CIFAR-10 VP, paper FID 2.70
    "vp_55": (18, [[3, 5, 0.06, 0.30]]),  # 2.45
    "vp_75": (18, [[3, 10, 0.06, 0.30]]),  # 2.27
    "vp_115": (18, [[3, 20, 0.06, 0.30]]),  # 2.21
    "vp_519": (20, [[9, 30, 0.06, 0.20]]),  # 2.11
    "edm_43": (18, [[3, 2, 0.14, 0.30]]),  # CIFAR-10 EDM-preconditioned model, 1.90
}


@dataclass(frozen=True)
class Interval:
    """One restart interval as given: K restarts of an N_restart-point descent from t_max to t_min."""

    n_restart: int
    k: int
    t_min: float
    t_max: float

    @property
    def nfe(self) -> int:
        return self.k * 2 * (self.n_restart - 1)


@dataclass
class PlannedRestart:
    """An interval resolved on a main grid: where it fires, its snapped t_min and its descent grid."""

    index: int  # main-grid point after whose landing step the restarts run
    interval: Interval
    t_min: float  # snapped onto the main grid
    grid: Tensor  # N_restart points from t_max down to t_min (float64)
    churn: Tensor  # per descent step: the raised level (sigma_hat or t_hat) to start from; == grid[j] if none


@dataclass
class RestartFields:
    """Options every Restart variant takes (mixed into each variant's Options dataclass)."""

    intervals: list[list[float]] | None = None  # [[N_restart, K, t_min, t_max], ...]; None: the default interval
    S_noise: float = 1.0  # scales the forward-jump (and churn) noise
    restart_gamma: float = 0.0  # EDM churn inside restart steps with level in [S_min, S_max]
    S_min: float = 0.01  # churn range, in sigma (sigma_eff = exp(-logSNR/2) in the t-space variant)
    S_max: float = 1.0
    final_denoise: bool = field(default=True)  # Tweedie step at the end (sigma view: the Euler step to sigma = 0)


def parse_intervals(raw: list[list[float]], owner: str = "restart") -> list[Interval]:
    """Check ``[[N_restart, K, t_min, t_max], ...]`` and return typed intervals (one-line errors)."""
    out = []
    for i, row in enumerate(raw):
        where = f"sampler {owner!r} option intervals[{i}]"
        if len(row) != 4:
            raise SamplerError(f"{where}: expected [N_restart, K, t_min, t_max], got {row!r}")
        n, k, lo, hi = (float(v) for v in row)
        if not (n.is_integer() and n >= 2):
            raise SamplerError(f"{where}: N_restart must be an integer >= 2, got {row[0]!r}")
        if not (k.is_integer() and k >= 1):
            raise SamplerError(f"{where}: K must be an integer >= 1, got {row[1]!r}")
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise SamplerError(f"{where}: need 0 < t_min < t_max, got t_min={row[2]!r}, t_max={row[3]!r}")
        out.append(Interval(int(n), int(k), lo, hi))
    return out


def check_restart_fields(o: Any, owner: str) -> list[Interval]:
    """Validate the shared options (in place: intervals written with int N_restart, K) and parse the intervals."""
    if o.S_noise < 0 or o.restart_gamma < 0:
        raise SamplerError(f"sampler {owner!r}: S_noise and restart_gamma must be >= 0, "
                           f"got S_noise={o.S_noise}, restart_gamma={o.restart_gamma}")
    if not 0 <= o.S_min <= o.S_max:
        raise SamplerError(f"sampler {owner!r}: need 0 <= S_min <= S_max, got S_min={o.S_min}, S_max={o.S_max}")
    intervals = parse_intervals(DEFAULT_INTERVALS if o.intervals is None else o.intervals, owner)
    if o.intervals is not None:  # readable configs: N_restart and K as ints (equal to the float form)
        o.intervals = [[int(r[0]), int(r[1]), float(r[2]), float(r[3])] for r in o.intervals]
    return intervals


def restart_nfe(steps: int, final_denoise: bool, intervals: list[Interval]) -> int:
    """Counted NFE of either variant: the main Heun pass, the final step and every restart descent."""
    return 2 * (steps - 1) + int(final_denoise) + sum(iv.nfe for iv in intervals)


def snap(points: Tensor, intervals: list[Interval], unit: str) -> dict[int, tuple[Interval, float]]:
    """Snap each t_min to the nearest of ``points`` (the landed main-grid points, index 1..); check collisions."""
    out: dict[int, tuple[Interval, float]] = {}
    for iv in intervals:
        j = int(torch.argmin((points - iv.t_min).abs()))
        lo = float(points[j])
        if j + 1 in out:
            raise SamplerError(f"restart intervals with t_min {out[j + 1][0].t_min} and {iv.t_min} both snap to the "
                               f"main-grid {unit} {lo:.6g}; use distinct t_min values or more main steps")
        if not iv.t_max > lo:
            raise SamplerError(f"restart interval t_max {iv.t_max} must exceed its t_min snapped onto the main grid "
                               f"({iv.t_min} -> {unit} {lo:.6g})")
        out[j + 1] = (iv, lo)
    return out


def churn_on(level: Tensor, o: Any) -> Tensor:
    """Descent points (step starts) whose noise level lies in [S_min, S_max] when restart_gamma > 0."""
    on = (level >= o.S_min) & (level <= o.S_max) & (o.restart_gamma > 0)
    on[-1] = False  # the last point is not a step start
    return on


class RestartBudget:
    """Mixin of every Restart sampler: the shared options check and NFE formula (put it before the base class)."""

    name = "restart"
    stochastic = True
    min_steps = 2
    default_steps = 18

    def _check_options(self) -> None:
        self.intervals = check_restart_fields(self.options, self.name)

    def nfe_for(self, steps: int) -> int:
        return restart_nfe(steps, self.options.final_denoise, self.intervals)


def restart_info(space: str, plan: dict[int, PlannedRestart]) -> dict[str, Any]:
    """``SampleResult.info`` of a Restart run: the variant and where each interval fired."""
    return {"space": space, "restarts": [
        {"index": p.index, "t_min": p.t_min, "t_max": p.interval.t_max, "K": p.interval.k,
         "n_restart": p.interval.n_restart} for p in plan.values()]}
