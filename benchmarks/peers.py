"""Peer samplers on our score functions: k-diffusion (EDM view of VE/VP) and torchsde's adaptive SDE solver.

The peers are imported lazily and only here; they are never a fastdiff dependency (``benchmarks/setup_peers.sh``
installs them into ``.venv-bench``). Of k-diffusion only ``k_diffusion.sampling`` (and the ``utils`` it imports)
is loaded, without running the package ``__init__`` (which pulls its training stack); ``utils`` imports
torchvision for image helpers we never call, so a stand-in module is used for that one import when torchvision
is missing. NFE is counted by wrapping the score in :class:`fastdiff.samplers.base.CountedScore`.

- k-diffusion: a denoiser D(x~; sigma) = x~ + sigma^2 s(t) score(s(t) x~, t(sigma)) over our score, sigmas from
  ``get_sigmas_karras`` on the same range as our EDM samplers; euler, heun, dpmpp_2m, dpmpp_sde (fixed budgets)
  and dpm_adaptive (DPM-Solver-23, tolerance sweep).
- torchsde: the reverse SDE in u = T - t (additive noise, exact G(t) of the process), ``sdeint(method="srk",
  adaptive=True)`` from T to t_eps, then one Tweedie denoise (as our samplers end); works on every process.
- processes without an EDM view (PSLD): torchsde fixed-step SDE and torchdiffeq fixed-grid PF-ODE solvers at the
  NFE budgets (:mod:`benchmarks.peers_psld`).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from benchmarks.optional import optional_module
from benchmarks.peers_diffusers import DEFAULT_ENDING, KARRAS, diffusers_schedulers, run_diffusers
from benchmarks.peers_psld import DETERMINISTIC_PSLD, is_psld_peer, psld_peer_specs, run_psld_peer, torchdiffeq_module
from benchmarks.specs import RunSpec
from fastdiff.processes.base import Process, append_dims
from fastdiff.samplers.base import CountedScore
from fastdiff.samplers.grids import edm_sigma_range
from fastdiff.samplers.noise import NoiseSource

MISSING = "peers not installed (see benchmarks/setup_peers.sh)"
K_FIXED: dict[str, tuple[str, int]] = {  # name -> (k-diffusion function, NFE per step; the last step to 0 is 1 NFE)
    "k:euler": ("sample_euler", 1), "k:heun": ("sample_heun", 2), "k:dpm_2": ("sample_dpm_2", 2),
    "k:lms": ("sample_lms", 1), "k:dpmpp_2m": ("sample_dpmpp_2m", 1), "k:dpmpp_sde": ("sample_dpmpp_sde", 2),
    "k:dpmpp_2m_sde": ("sample_dpmpp_2m_sde", 1), "k:dpmpp_3m_sde": ("sample_dpmpp_3m_sde", 1)}
K_BROWNIAN = ("k:dpmpp_sde", "k:dpmpp_2m_sde", "k:dpmpp_3m_sde")  # stochastic: a seeded Brownian tree
DETERMINISTIC = frozenset({"k:euler", "k:heun", "k:dpm_2", "k:lms", "k:dpmpp_2m", "k:dpm_adaptive",
                           *KARRAS, *DEFAULT_ENDING, *DETERMINISTIC_PSLD})
K_ADAPTIVE_RTOL: tuple[float, ...] = (0.1, 0.02)  # atol = rtol * 0.0078 / 0.05 (default ratio)
SDE_TOL: tuple[float, ...] = (0.2, 0.05)  # torchsde rtol = atol
_CACHE: dict[str, Any] = {}


class NFECapExceeded(RuntimeError):
    """An adaptive peer spent more score evaluations than the cap."""


# ---- lazy imports ---------------------------------------------------------------------------------------------
def _torchvision_stand_in() -> list[str]:
    """Register empty torchvision modules when torchvision is not importable; returns the names added."""
    try:
        importlib.import_module("torchvision.transforms.functional")
        return []
    except Exception:  # missing, or a build that does not match torch
        added = []
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            if name not in sys.modules or sys.modules[name] is None:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        tv, tr = sys.modules["torchvision"], sys.modules["torchvision.transforms"]
        tv.transforms = tr  # type: ignore[attr-defined]
        tr.functional = sys.modules["torchvision.transforms.functional"]  # type: ignore[attr-defined]
        return added


def k_sampling() -> Any | None:
    """``k_diffusion.sampling`` (package __init__ skipped), or None when k-diffusion or its deps are missing."""
    if "k" in _CACHE:
        return _CACHE["k"]
    mod = sys.modules.get("k_diffusion.sampling")
    if mod is None:
        try:
            spec = importlib.util.find_spec("k_diffusion")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            created = "k_diffusion" not in sys.modules
            if created:
                pkg = types.ModuleType("k_diffusion")
                pkg.__path__ = list(spec.submodule_search_locations)
                pkg.__package__ = "k_diffusion"
                sys.modules["k_diffusion"] = pkg
            stand_in = _torchvision_stand_in()
            try:
                mod = importlib.import_module("k_diffusion.sampling")
            except ImportError:
                mod = None
                for name in ("k_diffusion.sampling", "k_diffusion.utils") + (("k_diffusion",) if created else ()):
                    sys.modules.pop(name, None)
            finally:
                for name in stand_in:
                    sys.modules.pop(name, None)
    _CACHE["k"] = mod
    return mod


def torchsde_module() -> Any | None:
    return optional_module("torchsde")


def missing_peers() -> list[str]:
    """Names of the peers that cannot be imported (empty when all are there)."""
    mods = (("k-diffusion", k_sampling()), ("torchsde", torchsde_module()), ("diffusers", diffusers_schedulers()),
            ("torchdiffeq", torchdiffeq_module()))
    return [name for name, mod in mods if mod is None]


def peer_specs(process: Process, budgets: tuple[int, ...], k_rtols: tuple[float, ...] = K_ADAPTIVE_RTOL,
               sde_tols: tuple[float, ...] = SDE_TOL, default_ending: bool = False) -> list[RunSpec]:
    """The peer runs that apply to ``process`` and are installed (k-diffusion and diffusers need the EDM view);
    ``default_ending`` adds diffusers' default-grid variants (diagnostic: they over-sharpen)."""
    specs: list[RunSpec] = []
    if k_sampling() is not None and process.supports("edm_view"):
        specs += [RunSpec("peer", name, budget=b) for name in K_FIXED for b in budgets if b >= K_FIXED[name][1]]
        specs += [RunSpec("peer", "k:dpm_adaptive", tol=r) for r in k_rtols]
    if diffusers_schedulers() is not None and process.supports("edm_view"):
        names = KARRAS + (DEFAULT_ENDING if default_ending else ())
        specs += [RunSpec("peer", name, budget=b) for name in names for b in budgets]
    if torchsde_module() is not None:
        specs += [RunSpec("peer", "torchsde:srk", tol=r) for r in sde_tols]
    return specs + psld_peer_specs(process, budgets, torchsde_module() is not None)


# ---- adapters -------------------------------------------------------------------------------------------------
class KDenoiser:
    """k-diffusion model interface model(x~, sigma) -> D(x~; sigma) over a counted score (EDM view of VE/VP)."""

    def __init__(self, score: CountedScore, process: Process, cap: int | None = None) -> None:
        self.score, self.process, self.cap = score, process, cap

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        if self.cap is not None and self.score.calls >= self.cap:
            raise NFECapExceeded(f"more than {self.cap} NFE")
        sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        t = self.process.t_of_sigma(sig)
        s = self.process.scale(t)
        sc = self.score(append_dims(s, x.ndim).to(x.dtype) * x, t)
        return x + append_dims(sig**2 * s, x.ndim).to(x.dtype) * sc


class ReverseSDE:
    """torchsde SDE of the reverse-time process in u = T - t: dz = -(f - G G^T score) du + G dW (additive noise)."""

    noise_type = "additive"
    sde_type = "ito"

    def __init__(self, score: CountedScore, process: Process, state_shape: tuple[int, ...], cap: int | None) -> None:
        self.score, self.process, self.state_shape, self.cap = score, process, state_shape, cap
        self.T = float(process.T)

    def _t(self, u: Tensor) -> Tensor:
        return (self.T - torch.as_tensor(u, dtype=torch.float64)).reshape(1).expand(self.state_shape[0])

    def f(self, u: Tensor, y: Tensor) -> Tensor:
        if self.cap is not None and self.score.calls >= self.cap:
            raise NFECapExceeded(f"more than {self.cap} NFE")
        t = self._t(u)
        z = y.reshape(self.state_shape)
        drift = self.process.reverse_drift(z, t, self.score(z, t))
        return (-drift).reshape(y.shape[0], -1)

    def g(self, u: Tensor, y: Tensor) -> Tensor:
        _, GG = self.process.sde_coeffs(self._t(u)[:1])
        g = torch.diagonal(GG[0], dim1=-2, dim2=-1).clamp_min(0).sqrt()  # [k]
        per_block = y.shape[1] // self.process.k
        diag = g.repeat_interleave(per_block).to(y.dtype)
        return torch.diag_embed(diag).expand(y.shape[0], -1, -1)


@dataclass
class PeerResult:
    x: Tensor  # data samples
    nfe: float  # counted score evaluations per sample (mean)
    nfe_declared: float | None  # the peer's own accounting (formula or info['nfe']), None if it has none


def run_peer(spec: RunSpec, score_fn: Callable[[Tensor, Tensor], Tensor], process: Process,
             shape: tuple[int, ...], noise: NoiseSource, seed: int = 0, cap: int = 2000) -> PeerResult:
    """Run one peer spec on ``score_fn``; ``noise`` gives the prior draw (the same first draw as our samplers)."""
    score = CountedScore(score_fn, shape[0], torch.device("cpu"))
    torch.manual_seed(seed)
    with torch.no_grad():
        if spec.method.startswith("k:"):
            x, declared = _run_k(spec, score, process, shape, noise, seed, cap)
        elif spec.method.startswith("d:"):
            lo, hi = edm_sigma_range(process)
            x = run_diffusers(spec.method, KDenoiser(score, process), noise.randn(shape[1:]) * hi, process, lo, hi,
                              int(spec.budget))  # type: ignore[arg-type]
            declared = float(spec.budget)  # type: ignore[arg-type]
        elif is_psld_peer(spec.method):
            x, declared = run_psld_peer(spec, score, process, shape, noise, seed, ReverseSDE, torchsde_module())
        elif spec.method == "torchsde:srk":
            x, declared = _run_torchsde(spec, score, process, shape, noise, seed, cap)
        else:
            raise ValueError(f"unknown peer method {spec.method!r}")
    return PeerResult(x.float(), float(score.counts.double().mean()), declared)


def _run_k(spec: RunSpec, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
           seed: int, cap: int) -> tuple[Tensor, float | None]:
    ks = k_sampling()
    if ks is None:
        raise RuntimeError(MISSING)
    lo, hi = edm_sigma_range(process)
    model = KDenoiser(score, process, cap if spec.adaptive else None)
    x = noise.randn(shape[1:]) * hi
    if spec.method == "k:dpm_adaptive":
        rtol = float(spec.tol)  # type: ignore[arg-type]
        out, info = ks.sample_dpm_adaptive(model, x, lo, hi, rtol=rtol, atol=rtol * 0.0078 / 0.05, disable=True,
                                           return_info=True)
        return out, float(info["nfe"])
    fn, per_step = K_FIXED[spec.method]
    steps = spec.budget if per_step == 1 else (spec.budget + 1) // 2  # type: ignore[operator]
    sigmas = ks.get_sigmas_karras(steps, lo, hi, rho=7.0).to(x.dtype)
    kwargs: dict[str, Any] = {"disable": True}
    if spec.method in K_BROWNIAN:
        kwargs["noise_sampler"] = ks.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed)
    out = getattr(ks, fn)(model, x, sigmas, **kwargs)
    return out, float(per_step * steps - (per_step - 1))


def _run_torchsde(spec: RunSpec, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
                  seed: int, cap: int) -> tuple[Tensor, float | None]:
    tsde = torchsde_module()
    if tsde is None:
        raise RuntimeError(MISSING)
    state_shape = process.state_shape(shape)
    z = process.prior_sample(noise.randn(state_shape[1:]))
    y0 = z.reshape(shape[0], -1)
    t_eps = float(process.t_eps_sample)
    u_end = torch.tensor(float(process.T) - t_eps, dtype=y0.dtype).item()  # the same end for ts and the BM
    bm = tsde.BrownianInterval(t0=0.0, t1=u_end, size=tuple(y0.shape), dtype=y0.dtype, device=y0.device,
                               entropy=seed, levy_area_approximation="space-time")
    tol = float(spec.tol)  # type: ignore[arg-type]
    ys = tsde.sdeint(ReverseSDE(score, process, state_shape, cap), y0, torch.tensor([0.0, u_end], dtype=y0.dtype),
                     bm=bm, method="srk", adaptive=True, rtol=tol, atol=tol, dt=0.01)
    z = ys[-1].reshape(state_shape)
    x = process.denoise(z, t_eps, score(z, t_eps))
    return x, None
