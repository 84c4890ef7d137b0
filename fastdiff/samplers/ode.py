"""Probability-flow ODE samplers in t (Song et al. 2021): explicit Euler and Heun on dz/dt = f - G G^T score / 2."""
from __future__ import annotations

from torch import Tensor

from ..processes.base import Process
from . import register_sampler
from .base import CountedScore, TimeGridSampler
from .noise import NoiseSource


def pf_ode_velocity(score: CountedScore, process: Process, z: Tensor, t: Tensor) -> Tensor:
    """dz/dt of the probability-flow ODE at (z, t) (1 NFE)."""
    return process.reverse_drift(z, t, score(z, t), prob_flow=True)


@register_sampler("ode_euler")
class ODEEuler(TimeGridSampler):
    """Explicit Euler on the probability-flow ODE, stepping t from T down to t_eps (1 NFE/step)."""

    default_steps = 100

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        for i in range(len(ts) - 1):
            h = ts[i + 1] - ts[i]  # negative: integrating backwards in t
            z = z + h * pf_ode_velocity(score, process, z, ts[i])
        return z


@register_sampler("ode_heun")
class ODEHeun(TimeGridSampler):
    """Heun's method (explicit trapezoidal rule) on the probability-flow ODE in t (2 NFE/step, every step)."""

    nfe_per_step = 2
    default_steps = 50

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        for i in range(len(ts) - 1):
            h = ts[i + 1] - ts[i]
            d1 = pf_ode_velocity(score, process, z, ts[i])
            d2 = pf_ode_velocity(score, process, z + h * d1, ts[i + 1])
            z = z + 0.5 * h * (d1 + d2)
        return z
