"""diffusers' multistep schedulers (UniPC, DPM-Solver++ multistep, DEIS) driven by our continuous-time score.

diffusers schedulers work on the VP form x = alpha (x0 + sigma eps), alpha = 1 / sqrt(1 + sigma^2), over a discrete
training schedule given as betas. We hand them ``trained_betas`` whose N = 1000 sigmas run from the process's EDM
range [lo, hi] (even in t between t(lo) and t(hi)), so their Karras grid equals k-diffusion's
``get_sigmas_karras(steps, lo, hi)`` and our EDM samplers'. The model is called at the scheduler's own sigma for the
step (``scheduler.sigmas[i]``): the score is evaluated at that exact noise level through the EDM view (a VE state is
the VP one divided by alpha), and eps = (x~ - D(x~; sigma)) / sigma is returned (``prediction_type='epsilon'``).
The prior draw is the same as k-diffusion's (x~ = hi * eps), one model call per step (NFE = steps).

Variants: ``*_karras`` (use_karras_sigmas, final sigma 0 after the last Karras point: the issue's competitive ones)
and ``*_default`` (the scheduler's default linspace timesteps, whose last point jumps straight to sigma = 0).
Except DEIS: diffusers 0.42.1's DEISMultistepScheduler has no ``final_sigmas_type``; its sigma list ends with the
training schedule's smallest sigma (here ``lo``) instead of 0, twice on the Karras grid. So its last step is a no-op
that still costs a model call, and the sample keeps noise of std ``lo`` (0.01 on VE, 0.002 on VP): at NFE N it is
N - 1 steps and no final denoise. Run as the library ships it.
"""
from __future__ import annotations

import importlib
import math
from typing import Any

import torch
from torch import Tensor

from fastdiff.processes.base import Process

N_TRAIN = 1000
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (diffusers class, constructor options)
    "d:unipc_bh2_o2": ("UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 2}),
    "d:unipc_bh2_o3": ("UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 3}),
    "d:unipc_bh1_o2": ("UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 2}),
    "d:dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "d:dpmpp_3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "d:deis_2": ("DEISMultistepScheduler", {"solver_order": 2}),
    "d:deis_3": ("DEISMultistepScheduler", {"solver_order": 3}),
}
KARRAS = tuple(f"{v}_karras" for v in VARIANTS)
DEFAULT_ENDING = ("d:dpmpp_2m_default", "d:unipc_bh2_o2_default")


def diffusers_schedulers() -> Any | None:
    """The ``diffusers`` module (None when not installed or not importable)."""
    try:
        return importlib.import_module("diffusers")
    except Exception:  # noqa: BLE001  (missing, or a build that does not match torch)
        return None


def trained_betas(process: Process, lo: float, hi: float) -> list[float]:
    """Betas of an N-step discrete schedule whose sigmas go from lo to hi, even in the process's time."""
    t0, t1 = (float(process.t_of_sigma(torch.tensor([v], dtype=torch.float64))[0]) for v in (lo, hi))
    t = torch.linspace(t0, t1, N_TRAIN, dtype=torch.float64)
    sig = process.sigma(t).to(torch.float64)
    abar = 1.0 / (1.0 + sig**2)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return (1.0 - abar / prev).tolist()


def make_scheduler(name: str, process: Process, lo: float, hi: float, steps: int) -> Any:
    """A configured diffusers scheduler for ``name`` (a VARIANTS key plus '_karras' or '_default')."""
    mod = diffusers_schedulers()
    if mod is None:
        raise RuntimeError("diffusers not installed (see benchmarks/setup_peers.sh)")
    base, _, kind = name.rpartition("_")
    cls_name, opts = VARIANTS[base]
    sched = getattr(mod, cls_name)(num_train_timesteps=N_TRAIN, trained_betas=trained_betas(process, lo, hi),
                                   prediction_type="epsilon", use_karras_sigmas=kind == "karras", **opts)
    sched.set_timesteps(steps)
    return sched


def run_diffusers(name: str, denoiser: Any, x_prior: Tensor, process: Process, lo: float, hi: float,
                  steps: int) -> Tensor:
    """Sample with scheduler ``name`` from the prior draw ``x_prior`` (= hi * eps, k-diffusion's convention).

    ``denoiser(x~, sigma)`` is the EDM denoiser D over our score (benchmarks.peers.KDenoiser)."""
    sched = make_scheduler(name, process, lo, hi, steps)
    x = x_prior / math.sqrt(1.0 + hi**2)  # the VP form of the same point
    for i, t in enumerate(sched.timesteps):
        sigma = float(sched.sigmas[i])
        xt = x * math.sqrt(1.0 + sigma**2)
        eps = (xt - denoiser(xt, torch.full((x.shape[0],), sigma, dtype=torch.float64))) / sigma
        x = sched.step(eps, t, x).prev_sample
    return x
