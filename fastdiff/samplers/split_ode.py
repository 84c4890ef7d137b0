"""Deterministic splitting integrators on the PSLD probability-flow ODE (Pandey, Rudolph & Mandt 2024).

The PF-ODE drift splits into B (momentum) and A (position) flows (see ``phase_ops.py``). Schemes, per step
from t down to t - h:

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

from ..processes.base import Process
from . import register_sampler
from .base import CountedScore, SamplerError, TimeGridSampler
from .noise import NoiseSource
from .phase_ops import PhaseSpaceOps
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

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        ops = PhaseSpaceOps(process)
        if self.options.scheme == "ba":
            return self._ba(ops, score, z, ts)
        return self._bab(ops, score, z, ts)

    def _ba(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, ts: Tensor) -> Tensor:
        label = self.options.time_label or "start"
        for i in range(len(ts) - 1):
            t, t_next = ts[i], ts[i + 1]
            d, tl = ops.delta(t, t_next), step_time(label, t, t_next)
            s = score(z, tl)
            z = ops.b_kick(z, d, s, ode=True)
            if not self.options.reduced:
                s = score(z, tl)
            z = ops.a_drift(z, d, s, ode=True)
        return z

    def _bab(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, ts: Tensor) -> Tensor:
        reduced = self.options.reduced
        s = score(z, ts[0]) if reduced else None
        for i in range(len(ts) - 1):
            t, t_next = ts[i], ts[i + 1]
            d = ops.delta(t, t_next)
            if not reduced:
                s = score(z, t)
            z = ops.b_kick(z, 0.5 * d, s, ode=True)
            if not reduced:
                s = score(z, 0.5 * (t + t_next))
            z = ops.a_drift(z, d, s, ode=True)
            s = score(z, t_next)
            z = ops.b_kick(z, 0.5 * d, s, ode=True)
        return z
