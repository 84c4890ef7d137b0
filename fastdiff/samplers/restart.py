"""Restart sampling (Xu et al. 2023): ODE steps interleaved with forward noise jumps that restart a sub-interval.

Two variants behind one sampler, chosen by the process (never by its type):
- ``space="sigma"`` (default on EDM-view processes VE/VP): the paper's Algorithm 2 in the EDM view. The main
  pass is ``edm_heun`` over ``steps`` = N_main Karras points (last step to sigma = 0 is Euler); intervals
  ``[N_restart, K, t_min, t_max]`` are noise levels sigma.
- ``space="t"`` (always on PSLD, optional on VE/VP): the main pass is probability-flow Heun in t on a time grid
  of N_main points ending at t_eps, then a Tweedie denoise (``final_denoise``); intervals are *times*; the
  forward jump is the exact kernel ``process.transition(z, t_min, t_max)`` and the restart descent is PF-ODE
  Heun in t. Default intervals are the sigma defaults mapped to times through sigma_eff = exp(-logSNR / 2).
Counted NFE = 2 (N_main - 1) + final_denoise + sum_i K_i * 2 (N_restart_i - 1) in both variants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..processes.base import Process
from . import register_sampler
from .base import CountedScore, SamplerError, denoise_data_part
from .edm import EDMSampler, heun_step
from .grids import karras_sigmas, t_of_log_snr, time_grid
from .noise import NoiseSource

DEFAULT_INTERVALS: list[list[float]] = [[3, 2, 0.06, 0.30]]  # the paper's CIFAR-10 VP interval (sigma units)

# name -> (N_main, intervals): the paper's CIFAR-10 settings (also listed in configs/samplers/restart.yaml)
PRESETS: dict[str, tuple[int, list[list[float]]]] = {
    "vp_43": (18, [[3, 2, 0.06, 0.30]]),
    "vp_55": (18, [[3, 5, 0.06, 0.30]]),
    "vp_75": (18, [[3, 10, 0.06, 0.30]]),
    "vp_115": (18, [[3, 20, 0.06, 0.30]]),
    "vp_519": (20, [[9, 30, 0.06, 0.20]]),
    "edm_43": (18, [[3, 2, 0.14, 0.30]]),
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


def _normalized(raw: list[list[float]]) -> list[list[float]]:
    """Intervals with N_restart and K as ints (readable configs; equal to the float form)."""
    return [[int(r[0]), int(r[1]), float(r[2]), float(r[3])] for r in raw]


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


@register_sampler("restart")
class Restart(EDMSampler):
    """Restart sampling, Xu et al. 2023 (Algorithm 2; EDM view on VE/VP, exact-kernel t-space variant everywhere)."""

    requires: ClassVar[str | None] = None
    stochastic = True
    min_steps = 2
    default_steps = 18

    @dataclass
    class Options(EDMSampler.Options):
        intervals: list[list[float]] | None = None  # [[N_restart, K, t_min, t_max], ...]; None: default/preset
        preset: str | None = None  # one of PRESETS: fixes steps (N_main) and intervals
        S_noise: float = 1.0  # scales the forward-jump (and churn) noise
        restart_gamma: float = 0.0  # EDM churn inside restart steps with sigma in [S_min, S_max]
        S_min: float = 0.01  # churn range, in sigma (sigma_eff = exp(-logSNR/2) in the t-space variant)
        S_max: float = 1.0
        space: Literal["sigma", "t"] | None = None  # None: sigma on EDM-view processes, t otherwise
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "karras"  # t-space main grid
        t_eps: float | None = None  # t-space end time (default: the process's t_eps_sample)
        final_denoise: bool = True  # Tweedie step at the end (sigma view: the Euler step to sigma = 0)

    def __init__(self, nfe: int | None = None, steps: int | None = None, **options: Any) -> None:
        if options.get("preset") is None:
            super().__init__(nfe=nfe, steps=steps, **options)
            return
        super().__init__(**options)  # parses and checks options (preset name, intervals) first
        n_main = PRESETS[self.options.preset][0]
        where = f"sampler {self.name!r}: preset {self.options.preset!r} fixes"
        if steps is not None and nfe is not None:
            raise SamplerError(f"sampler {self.name!r}: give nfe= or steps=, not both")
        if steps is not None and steps != n_main:
            raise SamplerError(f"{where} steps (N_main) = {n_main}, got steps={steps!r}")
        if nfe is not None and nfe != self.nfe_for(n_main):
            raise SamplerError(f"{where} NFE = {self.nfe_for(n_main)}, got nfe={nfe!r}; drop nfe= or the preset")
        self.steps, self.budget = n_main, nfe

    # ---- options and budget ----------------------------------------------------------------------------
    def _check_options(self) -> None:
        o = self.options
        if o.S_noise < 0 or o.restart_gamma < 0:
            raise SamplerError(f"sampler {self.name!r}: S_noise and restart_gamma must be >= 0, "
                               f"got S_noise={o.S_noise}, restart_gamma={o.restart_gamma}")
        if not 0 <= o.S_min <= o.S_max:
            raise SamplerError(f"sampler {self.name!r}: need 0 <= S_min <= S_max, got S_min={o.S_min}, S_max={o.S_max}")
        raw = DEFAULT_INTERVALS if o.intervals is None else o.intervals
        if o.preset is not None:
            if o.preset not in PRESETS:
                raise SamplerError(f"sampler {self.name!r}: unknown preset {o.preset!r}; allowed: {', '.join(PRESETS)}")
            preset_iv = PRESETS[o.preset][1]
            if o.intervals is not None and parse_intervals(o.intervals) != parse_intervals(preset_iv):
                raise SamplerError(f"sampler {self.name!r}: preset {o.preset!r} fixes intervals = {preset_iv}, "
                                   f"got intervals={o.intervals}; drop one of them")
            if o.space == "t":
                raise SamplerError(f"sampler {self.name!r}: presets are noise levels for the sigma view; "
                                   "with space='t' give intervals in t instead")
            raw = preset_iv
        self.intervals = parse_intervals(raw, self.name)
        if o.intervals is not None:
            o.intervals = _normalized(o.intervals)
        self.default_intervals = o.intervals is None and o.preset is None

    @property
    def restart_nfe(self) -> int:
        """NFE spent in restart descents per sample."""
        return sum(iv.nfe for iv in self.intervals)

    def nfe_for(self, steps: int) -> int:
        return 2 * (steps - 1) + int(self.options.final_denoise) + self.restart_nfe

    def steps_for(self, nfe: int) -> int:
        """Largest N_main whose NFE fits ``nfe``; below the minimum the error names the restart cost."""
        if isinstance(nfe, int) and not isinstance(nfe, bool) and nfe < self.min_nfe:
            raise SamplerError(f"sampler {self.name!r}: NFE budget {nfe} is below its minimum {self.min_nfe} "
                               f"({self.min_nfe - self.restart_nfe} for {self.min_steps} main steps + "
                               f"{self.restart_nfe} for the restart intervals)")
        return super().steps_for(nfe)

    # ---- planning ----------------------------------------------------------------------------------------
    def space_for(self, process: Process) -> str:
        """'sigma' (EDM view, VE/VP) or 't' (any process)."""
        edm = process.supports("edm_view")
        space = self.options.space or ("sigma" if edm else "t")
        if space == "sigma" and not edm:
            raise SamplerError(f"sampler {self.name!r}: space='sigma' needs an EDM-view process (VE, VP); "
                               f"{type(process).__name__} runs the t-space variant (space='t' or unset)")
        if space == "t" and self.options.preset is not None:
            raise SamplerError(f"sampler {self.name!r}: preset {self.options.preset!r} is given in sigma units and "
                               f"{type(process).__name__} runs the t-space variant; give intervals in t instead")
        return space

    def main_grid(self, process: Process, device: torch.device | str = "cpu") -> Tensor:
        """Main-pass grid: Karras sigmas + 0 (sigma view) or N_main decreasing times T .. t_eps (t view)."""
        if self.space_for(process) == "sigma":
            return self.sigmas(process, torch.device(device))
        o = self.options
        return time_grid(o.grid, process, self.steps - 1, o.t_eps, o.rho, device)

    def restart_plan(self, process: Process) -> dict[int, PlannedRestart]:
        """Resolve the intervals on this process's main grid: {main-grid index: planned restart} (float64, CPU)."""
        space, o = self.space_for(process), self.options
        main = self.main_grid(process)
        landed = main[1:self.steps]  # points reached by a main step (excludes the start and the final 0)
        intervals = self.intervals
        if space == "t":
            t_lo, T = float(main[-1]), float(process.T)
            if self.default_intervals:  # sigma-unit defaults -> times with the same sigma_eff
                intervals = [Interval(iv.n_restart, iv.k, *(float(t_of_sigma_eff(
                    process, torch.tensor([v], dtype=torch.float64), t_lo, T)) for v in (iv.t_min, iv.t_max)))
                    for iv in intervals]
            for iv in intervals:
                if iv.t_max > T:
                    raise SamplerError(f"sampler {self.name!r}: restart t_max {iv.t_max} exceeds the process horizon "
                                       f"T = {T} (in space='t' interval bounds are times)")
        plan = {}
        for idx, (iv, lo) in snap(landed, intervals, space).items():
            if space == "sigma":
                grid = karras_sigmas(iv.n_restart, lo, iv.t_max, o.rho)
                grid[0], grid[-1] = iv.t_max, lo
                level = grid
            else:
                grid = descent_grid(o.grid, process, iv.t_max, lo, iv.n_restart, o.rho)
                level = sigma_eff(process, grid)
            churn = grid.clone()
            on = (level >= o.S_min) & (level <= o.S_max) & (o.restart_gamma > 0)
            on[-1] = False  # the last point is not a step start
            if space == "sigma":
                churn = torch.where(on, grid * (1 + o.restart_gamma), grid)
            elif bool(on.any()):
                raised = t_of_sigma_eff(process, level * (1 + o.restart_gamma), 0.0, float(process.T))
                churn = torch.where(on, torch.maximum(raised, grid), grid)
            plan[idx] = PlannedRestart(idx, iv, lo, grid, churn)
        return plan

    @staticmethod
    def _info(space: str, plan: dict[int, PlannedRestart]) -> dict[str, Any]:
        return {"space": space, "restarts": [
            {"index": p.index, "t_min": p.t_min, "t_max": p.interval.t_max, "K": p.interval.k,
             "n_restart": p.interval.n_restart} for p in plan.values()]}

    # ---- running -----------------------------------------------------------------------------------------
    def run(self, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> tuple[Tensor, dict[str, Any]]:
        space = self.space_for(process)
        plan = self.restart_plan(process)
        if space == "sigma":
            sig = self.sigmas(process, device)
            x = self.start(shape, sig[0], noise, device)
            return self.integrate_sigma(score, process, x, sig, noise, plan), self._info(space, plan)
        ts = self.main_grid(process, device)
        z = self.prior(process, shape, noise, device)
        z = self.integrate_t(score, process, z, ts, noise, plan)
        return self.finish(score, process, z, ts[-1]), self._info(space, plan)

    def integrate_sigma(self, score: CountedScore, process: Process, x: Tensor, sigmas: Tensor,
                        noise: NoiseSource, plan: dict[int, PlannedRestart]) -> Tensor:
        """edm_heun's main loop with restarts after the steps landing on the planned indices."""
        last = len(sigmas) - 1 if self.options.final_denoise else len(sigmas) - 2
        for i in range(last):
            x = heun_step(score, process, x, sigmas[i], sigmas[i + 1])
            if i + 1 in plan:
                x = self.restart_sigma(score, process, x, plan[i + 1], noise)
        if not self.options.final_denoise:  # stopped at the last positive sigma: return the process state
            s = process.scale(process.t_of_sigma(sigmas[last].reshape(1)))
            x = x * s.to(x.dtype).to(x.device)
        return x

    def restart_sigma(self, score: CountedScore, process: Process, x: Tensor, p: PlannedRestart,
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

    def integrate_t(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource,
                    plan: dict[int, PlannedRestart]) -> Tensor:
        """PF-ODE Heun in t over the main grid with restarts after the steps landing on the planned indices."""
        for i in range(len(ts) - 1):
            z = heun_t_step(score, process, z, ts[i], ts[i + 1])
            if i + 1 in plan:
                z = self.restart_t(score, process, z, plan[i + 1], noise)
        return z

    def restart_t(self, score: CountedScore, process: Process, z: Tensor, p: PlannedRestart,
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

    def finish(self, score: CountedScore, process: Process, z: Tensor, t_end: Tensor) -> Tensor:
        """Tweedie denoising at t_end (1 NFE) when final_denoise is on; momentum is kept for PSLD."""
        return denoise_data_part(score, process, z, t_end) if self.options.final_denoise else z
