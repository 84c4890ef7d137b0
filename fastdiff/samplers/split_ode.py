"""Deterministic splitting integrators on the PSLD probability-flow ODE (Pandey, Rudolph & Mandt 2024).

The PF-ODE drift (the lambda = 0 member of the reverse-SDE family, see ``splitting.py``) splits into B (momentum)
and A (position) flows: B: dm = x/2 + (M nu / 2)(s_m + M^-1 m), A: dx = -M^-1 m/2 + (Gamma/2)(s_x + x).
Schemes, per step from t down to t - h:

- ``ba``  (symplectic Euler): B(h), A(h). Naive: a fresh score before B and before A (2 NFE/step).
  Reduced: one score at the step start, reused by A (1 NFE/step).
- ``bab`` (velocity Verlet): B(h/2), A(h), B(h/2). Naive: fresh scores at (z, t), after the first kick at
  t - h/2, and after A at t - h (3 NFE/step). Reduced: the score taken after A (at t - h) serves the closing
  kick, the next step's opening kick and its A (first-same-as-last, as in velocity Verlet), so one
  evaluation per step plus one at the very start (NFE = steps + 1).

``time_label`` (start | mid | end) sets the network time for the ``ba`` evaluations; the ``bab`` times are
fixed by the scheme (leave it unset). Final Tweedie denoising optional (+1 NFE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ..processes.phase_space import PhaseSpaceProcess
from . import register_sampler
from .base import CountedScore, SamplerError, TimeGridSampler
from .noise import NoiseSource
from .splitting import TimeLabel, step_time

_NFE_PER_STEP = {("ba", False): 2, ("ba", True): 1, ("bab", False): 3, ("bab", True): 1}


@register_sampler("split_ode")
class SplitODE(TimeGridSampler):
    """Naive/reduced symplectic Euler (BA) and velocity Verlet (BAB) on the PSLD PF-ODE (Pandey et al. 2024)."""

    requires = "phase_space"
    stochastic = False
    default_steps = 100

    @dataclass
    class Options(TimeGridSampler.Options):
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "quadratic"
        scheme: Literal["ba", "bab"] = "bab"
        reduced: bool = True
        time_label: TimeLabel | None = None

    def _check_options(self) -> None:
        if self.options.scheme == "bab" and self.options.time_label is not None:
            raise SamplerError(f"sampler {self.name!r}: time_label applies to scheme 'ba' only; the 'bab' "
                               f"evaluation times are fixed (t, t - h/2, t - h), leave time_label unset")

    def nfe_for(self, steps: int) -> int:
        o = self.options
        extra = 1 if (o.scheme == "bab" and o.reduced) else 0
        return steps * _NFE_PER_STEP[(o.scheme, o.reduced)] + extra + int(o.final_denoise)

    def integrate(self, score: CountedScore, process: PhaseSpaceProcess, z: Tensor, ts: Tensor,
                  noise: NoiseSource) -> Tensor:
        if self.options.scheme == "ba":
            return self._ba(process, score, z, ts)
        return self._bab(process, score, z, ts)

    @staticmethod
    def b(process: PhaseSpaceProcess, z: Tensor, delta: float, s: Tensor) -> Tensor:
        return process.kick_momentum(z, delta, s, 0.5, 0.5)

    @staticmethod
    def a(process: PhaseSpaceProcess, z: Tensor, delta: float, s: Tensor) -> Tensor:
        return process.drift_position(z, delta, s, 0.5, 0.5)

    def _ba(self, process: PhaseSpaceProcess, score: CountedScore, z: Tensor, ts: Tensor) -> Tensor:
        label = self.options.time_label or "start"
        for i in range(len(ts) - 1):
            t, t_next = ts[i], ts[i + 1]
            d, tl = process.delta(t, t_next), step_time(label, t, t_next)
            s = score(z, tl)
            z = self.b(process, z, d, s)
            if not self.options.reduced:
                s = score(z, tl)
            z = self.a(process, z, d, s)
        return z

    def _bab(self, process: PhaseSpaceProcess, score: CountedScore, z: Tensor, ts: Tensor) -> Tensor:
        reduced = self.options.reduced
        s = score(z, ts[0]) if reduced else None
        for i in range(len(ts) - 1):
            t, t_next = ts[i], ts[i + 1]
            d = process.delta(t, t_next)
            if not reduced:
                s = score(z, t)
            z = self.b(process, z, 0.5 * d, s)
            if not reduced:
                s = score(z, 0.5 * (t + t_next))
            z = self.a(process, z, d, s)
            s = score(z, t_next)
            z = self.b(process, z, 0.5 * d, s)
        return z
