"""Restart sampling (Xu et al. 2023): the registered ``restart`` name, a factory over its two variants.

- :class:`~fastdiff.samplers.restart_sigma.RestartSigma` (``space="sigma"``, the default on processes with the EDM
  view, VE/VP): the paper's Algorithm 2, intervals in noise levels sigma.
- :class:`~fastdiff.samplers.restart_t.RestartT` (``space="t"``, always on PSLD, optional on VE/VP): PF-ODE Heun
  in t with exact-kernel forward jumps, intervals in times.

The budget does not depend on the variant (same NFE formula), so ``nfe=`` resolves here; the variant is chosen by
the process's capability when sampling (never by its type) and built once per space. ``preset`` fixes N_main, the
intervals and the published churn settings (restart_intervals.PRESETS / PUBLISHED_CHURN, with their source).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..processes.base import Process
from . import register_sampler
from .base import CountedScore, SamplerError, StepSampler
from .grids import EDM_SIGMA_MAX, EDM_SIGMA_MIN
from .noise import NoiseSource
from .restart_intervals import PRESETS, PUBLISHED_CHURN, PlannedRestart, RestartBudget, RestartFields, parse_intervals
from .restart_sigma import RestartSigma
from .restart_t import RestartT, sigma_eff  # noqa: F401  (sigma_eff: re-exported for callers)

_SHARED = [f.name for f in dataclasses.fields(RestartFields)] + ["dtype", "rho"]


@register_sampler("restart")
class Restart(RestartBudget, StepSampler):
    """Restart sampling, Xu et al. 2023: picks RestartSigma (EDM view) or RestartT (any process) per process."""

    @dataclass
    class Options(RestartFields, StepSampler.Options):
        preset: str | None = None  # one of PRESETS: fixes steps (N_main), intervals and the published churn
        space: Literal["sigma", "t"] | None = None  # None: sigma on EDM-view processes, t otherwise
        rho: float = 7.0
        sigma_min: float = EDM_SIGMA_MIN  # sigma variant: Karras range (clipped to the process's)
        sigma_max: float = EDM_SIGMA_MAX
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "karras"  # t variant: main grid
        t_eps: float | None = None  # t variant: end time (default: the process's t_eps_sample)

    def __init__(self, nfe: int | None = None, steps: int | None = None, **options: Any) -> None:
        preset = options.get("preset")
        if preset not in PRESETS:  # no preset (or an unknown name: the options check names the allowed ones)
            super().__init__(nfe=nfe, steps=steps, **options)
            self._variants: dict[str, StepSampler] = {}
            return
        n_main, intervals = PRESETS[preset]
        where = f"sampler {self.name!r}: preset {preset!r} fixes"
        if options.get("space") == "t":
            raise SamplerError(f"sampler {self.name!r}: presets are noise levels for the sigma view; "
                               "with space='t' give intervals in t instead")
        if options.get("intervals") is not None and \
                parse_intervals(options["intervals"], self.name) != parse_intervals(intervals):
            raise SamplerError(f"{where} intervals = {intervals}, got intervals={options['intervals']}; "
                               "drop one of them")
        clash = {k: v for k, v in options.items() if k in PUBLISHED_CHURN and v != PUBLISHED_CHURN[k]}
        if clash:
            raise SamplerError(f"{where} the published {', '.join(f'{k}={PUBLISHED_CHURN[k]}' for k in clash)}, got "
                               f"{', '.join(f'{k}={v}' for k, v in clash.items())}; drop the preset to change them")
        if steps is not None and nfe is not None:
            raise SamplerError(f"sampler {self.name!r}: give nfe= or steps=, not both")
        if steps is not None and steps != n_main:
            raise SamplerError(f"{where} steps (N_main) = {n_main}, got steps={steps!r}")
        super().__init__(steps=n_main, **{**options, "intervals": intervals, **PUBLISHED_CHURN})
        if nfe is not None and nfe != self.nfe:
            raise SamplerError(f"{where} NFE = {self.nfe}, got nfe={nfe!r}; drop nfe= or the preset")
        self.budget = nfe
        self._variants = {}

    def _check_options(self) -> None:
        o = self.options
        if o.preset is not None and o.preset not in PRESETS:
            raise SamplerError(f"sampler {self.name!r}: unknown preset {o.preset!r}; allowed: {', '.join(PRESETS)}")
        super()._check_options()

    def steps_for(self, nfe: int) -> int:
        """Largest N_main whose NFE fits ``nfe``; below the minimum the error names the restart cost."""
        if isinstance(nfe, int) and not isinstance(nfe, bool) and nfe < self.min_nfe:
            cost = sum(iv.nfe for iv in self.intervals)
            raise SamplerError(f"sampler {self.name!r}: NFE budget {nfe} is below its minimum {self.min_nfe} "
                               f"({self.min_nfe - cost} for {self.min_steps} main steps + {cost} for the restart "
                               "intervals)")
        return super().steps_for(nfe)

    # ---- the variant ---------------------------------------------------------------------------------------
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

    def variant(self, process: Process) -> StepSampler:
        """The sampler that runs on ``process`` (built once per space, same steps and shared options)."""
        space = self.space_for(process)
        if space not in self._variants:
            o = self.options
            shared = {k: getattr(o, k) for k in _SHARED}
            if space == "sigma":
                self._variants[space] = RestartSigma(steps=self.steps, sigma_min=o.sigma_min, sigma_max=o.sigma_max,
                                                     **shared)
            else:
                self._variants[space] = RestartT(steps=self.steps, grid=o.grid, t_eps=o.t_eps, **shared)
        return self._variants[space]

    def main_grid(self, process: Process, device: torch.device | str = "cpu") -> Tensor:
        """Main-pass grid of the variant: Karras sigmas + 0 (sigma) or N_main decreasing times T .. t_eps (t)."""
        return self.variant(process).main_grid(process, device)

    def restart_plan(self, process: Process) -> dict[int, PlannedRestart]:
        """The intervals resolved on this process's main grid: {main-grid index: planned restart}."""
        return self.variant(process).restart_plan(process)

    def run(self, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> tuple[Tensor, dict[str, Any]]:
        return self.variant(process).run(score, process, shape, noise, device)
