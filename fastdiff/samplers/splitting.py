"""Splitting integrators for PSLD: SSCS, naive OBA/BAO/OBAB and reduced OBA (SPS) (Pandey, Rudolph & Mandt 2024).

Every step goes from t down to t - h on the time grid (default: quadratic striding, dense near t_eps, where the
PSLD momentum block is stiff). The sub-steps O, B, A and the SSCS pieces are in ``phase_ops.py``. Per step:

- ``sscs``: linear OU half-step (exact), Euler step of the score part with one score at the midpoint, linear half-step.
- ``oba``:  O(h); score; B(h); score; A(h)                       (2 NFE/step)
- ``bao``:  score; B(h); score; A(h); O(h)                       (2 NFE/step)
- ``obab``: O(h); score; B(h/2); score; A(h); score; B(h/2)      (3 NFE/step; O followed by velocity Verlet)
- ``sps``:  O(h); score; B(h); A(h) with that same score         (1 NFE/step; the paper's reduced OBA)

``time_label`` is the time handed to the network for every evaluation of a step: the step start t, its end
t - h, or the midpoint. ``lambda_s`` and ``lambda_m`` scale the noise on the position and on the momentum: each
choice is a reverse process with the same marginals (lambda_s = lambda_m = 1: the exact reverse SDE split).
All schemes end with the optional Tweedie denoising step at t_eps (+1 NFE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from ..processes.base import Process
from . import register_sampler
from .base import CountedScore, SamplerError, TimeGridSampler
from .noise import NoiseSource
from .phase_ops import PhaseSpaceOps

TimeLabel = Literal["start", "mid", "end"]


def step_time(label: str, t: Tensor, t_next: Tensor) -> Tensor:
    """The time given to the network within the step [t_next, t]."""
    if label == "start":
        return t
    if label == "end":
        return t_next
    return 0.5 * (t + t_next)


class PhaseSpaceSampler(TimeGridSampler):
    """Base of the PSLD splitting samplers: phase-space processes only, quadratic grid by default."""

    requires = "phase_space"
    stochastic = True
    default_steps = 100

    @dataclass
    class Options(TimeGridSampler.Options):
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "quadratic"
        time_label: TimeLabel = "start"

    def ops(self, process: Process) -> PhaseSpaceOps:
        o = self.options
        return PhaseSpaceOps(process, getattr(o, "lambda_s", 1.0), getattr(o, "lambda_m", 1.0))

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        ops = self.ops(process)
        for i in range(len(ts) - 1):
            z = self.step(ops, score, z, ts[i], ts[i + 1], noise)
        return z

    def step(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        """One step from t down to t_next."""
        raise NotImplementedError


@register_sampler("sscs")
class SSCS(PhaseSpaceSampler):
    """Symmetric splitting CLD sampler (Dockhorn et al. 2022) on PSLD: exact OU half-steps around an Euler score step."""

    @dataclass
    class Options(PhaseSpaceSampler.Options):
        time_label: TimeLabel = "mid"

    def step(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        t_mid = 0.5 * (t + t_next)
        z = ops.linear_step(z, t, t_mid, noise.randn_like(z))
        s = score(z, step_time(self.options.time_label, t, t_next))
        z = ops.score_part(z, ops.delta(t, t_next), s)
        return ops.linear_step(z, t_mid, t_next, noise.randn_like(z))


class OBASplitting(PhaseSpaceSampler):
    """Base of the O/B/A compositions: adds ``lambda_s`` / ``lambda_m`` (noise scales on position / momentum)."""

    @dataclass
    class Options(PhaseSpaceSampler.Options):
        lambda_s: float = 1.0
        lambda_m: float = 1.0

    def _check_options(self) -> None:
        for key in ("lambda_s", "lambda_m"):
            lam = getattr(self.options, key)
            if not (lam >= 0 and lam < float("inf")):
                raise SamplerError(f"sampler {self.name!r}: {key} must be a finite number >= 0, got {lam!r}")


@register_sampler("oba")
class NaiveOBA(OBASplitting):
    """Naive OBA splitting (Pandey et al. 2024): O, then B and A each after a fresh score evaluation."""

    nfe_per_step: ClassVar[int] = 2

    def step(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d, tl = ops.delta(t, t_next), step_time(self.options.time_label, t, t_next)
        z = ops.o_step(z, d, noise.randn_like(z))
        z = ops.b_kick(z, d, score(z, tl))
        return ops.a_drift(z, d, score(z, tl))


@register_sampler("bao")
class NaiveBAO(OBASplitting):
    """Naive BAO splitting (Pandey et al. 2024): B and A each after a fresh score evaluation, then O."""

    nfe_per_step: ClassVar[int] = 2

    def step(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d, tl = ops.delta(t, t_next), step_time(self.options.time_label, t, t_next)
        z = ops.b_kick(z, d, score(z, tl))
        z = ops.a_drift(z, d, score(z, tl))
        return ops.o_step(z, d, noise.randn_like(z))


@register_sampler("obab")
class NaiveOBAB(OBASplitting):
    """Naive OBAB splitting (Pandey et al. 2024): O(h), then velocity Verlet B(h/2) A(h) B(h/2), 3 scores per step."""

    nfe_per_step: ClassVar[int] = 3

    def step(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d, tl = ops.delta(t, t_next), step_time(self.options.time_label, t, t_next)
        z = ops.o_step(z, d, noise.randn_like(z))
        z = ops.b_kick(z, 0.5 * d, score(z, tl))
        z = ops.a_drift(z, d, score(z, tl))
        return ops.b_kick(z, 0.5 * d, score(z, tl))


@register_sampler("sps")
class SPS(OBASplitting):
    """SPS, the reduced OBA splitting sampler (Pandey, Rudolph & Mandt 2024): one score after O, reused by B and A."""

    @dataclass
    class Options(OBASplitting.Options):
        time_label: TimeLabel = "start"
        lambda_s: float = 1.0

    def step(self, ops: PhaseSpaceOps, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d = ops.delta(t, t_next)
        z = ops.o_step(z, d, noise.randn_like(z))
        s = score(z, step_time(self.options.time_label, t, t_next))
        z = ops.b_kick(z, d, s)
        return ops.a_drift(z, d, s)


from . import split_ode  # noqa: E402,F401  (registers the deterministic splitting sampler)
