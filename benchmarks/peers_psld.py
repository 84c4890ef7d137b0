"""Fixed-budget peers for processes without an EDM view (PSLD): general SDE/ODE libraries used as a user would.

A user of torchsde or torchdiffeq samples PSLD by handing the library the reverse-time SDE or the probability-flow
ODE in u = T - t (so that the solver integrates forward), a fixed number of steps, and ends, like our samplers, with
one Tweedie denoise at t_eps (1 NFE). Every peer here declares its NFE as a formula of the step count, checked by the
benchmark against the counted evaluations; the step count is the largest whose NFE fits the budget.

- torchsde ``sdeint`` fixed-step (``adaptive=False``, uniform dt) on :class:`benchmarks.peers.ReverseSDE` (additive
  noise, so Ito = Stratonovich and the Stratonovich-only methods apply to the same SDE), seeded BrownianInterval.
  Drift evaluations, read from torchsde 0.2.6's ``_core/methods``: euler 1/step; midpoint 2/step; reversible_heun
  1/step plus 1 at the start (``init_extra_solver_state``); srk (SRA1 for additive noise) 3/step (its 2-stage
  tableau evaluates the first stage's drift twice); and sdeint itself evaluates the drift once before solving (its
  shape check), which counts like any evaluation.
- torchdiffeq ``odeint`` fixed-grid on the PF-ODE: euler 1/step, midpoint 2/step, rk4 (3/8 rule) 4/step,
  explicit_adams (Adams-Bashforth, max_order 4, after two RK4 warm-up steps: 4 + 4 + 1 per later step). The grid
  (:func:`fastdiff.samplers.grids.time_grid`): even in t (no suffix), quadratic in t (``@quadratic``, dense near
  t_eps), even in log-SNR (``@logsnr``) or in sigma^(1/7) with sigma = exp(-logSNR/2) (``@karras``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from benchmarks.optional import optional_module
from benchmarks.specs import RunSpec
from fastdiff.processes.base import Process
from fastdiff.samplers.base import CountedScore
from fastdiff.samplers.grids import time_grid
from fastdiff.samplers.noise import NoiseSource

# name -> (torchsde method, drift evaluations per step, extra evaluations at the start)
TSDE_FIXED: dict[str, tuple[str, int, int]] = {
    "torchsde:euler": ("euler", 1, 0), "torchsde:reversible_heun": ("reversible_heun", 1, 1),
    "torchsde:midpoint": ("midpoint", 2, 0), "torchsde:srk_fixed": ("srk", 3, 0)}
SDEINT_CHECK = 1  # sdeint evaluates the drift once at the start to check its shape (torchsde _core/sdeint.py)
_STRATONOVICH = ("reversible_heun", "midpoint")  # torchsde accepts these only for sde_type 'stratonovich'
# name -> (torchdiffeq method, time grid); NFE per step in ode_nfe. Euler only on the even-t grid (the worst peer
# on every grid); the others on every grid of time_grid, as a careful user would try them (measured, n = 2000, gap
# at NFE 15/20/35/50/100: on psld/image64/exact quadratic is best for midpoint and rk4 at 15-35 and logsnr for rk4
# at 50; on psld/rings2d/exact karras is best for rk4 at 35 and 100; no grid is best everywhere)
ODE_GRIDS = ("uniform", "quadratic", "logsnr", "karras")
TDE_FIXED: dict[str, tuple[str, str]] = {"torchdiffeq:euler": ("euler", "uniform")}
TDE_FIXED.update({f"torchdiffeq:{m}" + ("" if g == "uniform" else f"@{g}"): (m, g)
                  for m in ("midpoint", "rk4", "explicit_adams") for g in ODE_GRIDS})
_ODE_PER_STEP = {"euler": 1, "midpoint": 2, "rk4": 4}
ADAMS_WARMUP = 2  # torchdiffeq's explicit_adams takes RK4 steps until it has 3 past drifts (_MIN_ORDER - 1)
# explicit_adams' default max_order 12 diverges on PSLD at every budget (std ~1e24 at 97 steps on a 2-D Gaussian);
# max_order 4 (Adams-Bashforth 3 after the warm-up), the choice of a user who sees that, converges
ADAMS_OPTIONS = {"max_order": 4}
DETERMINISTIC_PSLD = frozenset(TDE_FIXED)


def torchdiffeq_module() -> Any | None:
    return optional_module("torchdiffeq")


def sde_nfe(name: str, steps: int) -> int:
    """Counted score evaluations of a torchsde fixed-step peer with ``steps`` steps, the final denoise included."""
    _, per_step, extra = TSDE_FIXED[name]
    return per_step * steps + extra + SDEINT_CHECK + 1


def ode_nfe(name: str, steps: int) -> int:
    """Counted score evaluations of a torchdiffeq fixed-grid peer with ``steps`` steps, the final denoise included."""
    method = TDE_FIXED[name][0]
    if method == "explicit_adams":
        warm = min(steps, ADAMS_WARMUP)
        return 4 * warm + (steps - warm) + 1
    return _ODE_PER_STEP[method] * steps + 1


def nfe_of(name: str, steps: int) -> int:
    return sde_nfe(name, steps) if name in TSDE_FIXED else ode_nfe(name, steps)


def steps_for(name: str, budget: int) -> int:
    """The largest step count whose NFE fits ``budget`` (0: none fits)."""
    steps = 0
    while nfe_of(name, steps + 1) <= budget:
        steps += 1
    return steps


def psld_peer_specs(process: Process, budgets: tuple[int, ...], sde_available: bool) -> list[RunSpec]:
    """The fixed-budget SDE/ODE-library peers for a process without an EDM view (none for VE/VP)."""
    if process.supports("edm_view"):
        return []
    names = (list(TSDE_FIXED) if sde_available else []) + (list(TDE_FIXED) if torchdiffeq_module() else [])
    return [RunSpec("peer", name, budget=b) for name in names for b in budgets if steps_for(name, b) >= 1]


def is_psld_peer(method: str) -> bool:
    return method in TSDE_FIXED or method in TDE_FIXED


def run_psld_peer(spec: RunSpec, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
                  seed: int, sde_factory: Callable[..., Any], tsde: Any) -> tuple[Tensor, float]:
    """Samples and the declared NFE of one fixed-budget SDE/ODE-library peer; ``sde_factory(score, process,
    state_shape, cap)`` makes the reverse SDE (peers.ReverseSDE), ``tsde`` is the torchsde module."""
    steps = steps_for(spec.method, int(spec.budget))  # type: ignore[arg-type]
    state_shape = process.state_shape(shape)
    z = process.prior_sample(noise.randn(state_shape[1:]))
    t_eps = float(process.t_eps_sample)
    if spec.method in TSDE_FIXED:
        z = _sde_solve(spec.method, steps, score, process, z, seed, sde_factory, tsde)
    else:
        z = _ode_solve(spec.method, steps, score, process, z)
    return process.denoise(z, t_eps, score(z, t_eps)), float(nfe_of(spec.method, steps))


def _sde_solve(name: str, steps: int, score: CountedScore, process: Process, z: Tensor, seed: int,
               sde_factory: Callable[..., Any], tsde: Any) -> Tensor:
    if tsde is None:
        raise RuntimeError("torchsde not installed")
    method = TSDE_FIXED[name][0]
    y0 = z.reshape(z.shape[0], -1)
    u_end = torch.tensor(float(process.T) - float(process.t_eps_sample), dtype=y0.dtype).item()
    bm = tsde.BrownianInterval(t0=0.0, t1=u_end, size=tuple(y0.shape), dtype=y0.dtype, device=y0.device,
                               entropy=seed, levy_area_approximation="space-time")
    sde = sde_factory(score, process, tuple(z.shape), None)
    if method in _STRATONOVICH:  # additive noise: the Stratonovich SDE is the same SDE
        sde.sde_type = "stratonovich"
    # torchsde steps t += dt until it reaches the end (the last step clipped to it): a dt a hair above u_end/steps
    # makes exactly ``steps`` steps, where accumulated rounding with dt = u_end/steps can add a tiny extra one.
    dt = u_end / steps * (1 + 1e-9)
    ys = tsde.sdeint(sde, y0, torch.tensor([0.0, u_end], dtype=torch.float64), bm=bm, method=method, dt=dt,
                     adaptive=False)
    return ys[-1].reshape(z.shape)


def _ode_solve(name: str, steps: int, score: CountedScore, process: Process, z: Tensor) -> Tensor:
    tde = torchdiffeq_module()
    if tde is None:
        raise RuntimeError("torchdiffeq not installed")
    method, grid = TDE_FIXED[name]
    T = float(process.T)
    u = (T - time_grid(grid, process, steps)).to(z.dtype)  # 0 .. T - t_eps, increasing

    def drift(uu: Tensor, y: Tensor) -> Tensor:  # dz/du of the PF-ODE
        t = (T - uu.to(torch.float64)).reshape(1).expand(y.shape[0])
        return -process.reverse_drift(y, t, score(y, t), prob_flow=True)

    options = ADAMS_OPTIONS if method == "explicit_adams" else None
    return tde.odeint(drift, z, u, method=method, options=options)[-1]
