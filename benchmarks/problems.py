"""The quality benchmark's problems: a process, a target law with exact samples, and the score function to sample.

Targets: a 64-D image-like diagonal mixture with sharp modes (``GaussianMixture.image_like(10, 8, seed=0)``: 10
smooth 8x8 patterns, per-pixel stds 0.02..0.2), the 2-D toy2d rings (8 Gaussians, radius sqrt 2, std 0.1: the law
the toy2d networks are trained on) and a 16-D anisotropic mixture (``GaussianMixture.random(6, 16, seed=0)``).
Scenarios: ``exact`` (the oracle score), ``biased`` (exact below sigma_b, a perturbed mixture's score above:
:mod:`benchmarks.biased`) and ``trained`` (a toy2d network, target = its rings; or a digits U-Net, metric fd_digits with a bootstrap SE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor

from benchmarks.biased import BiasedScore, perturbed
from fastdiff.data.toy2d import rings_mixture
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.processes.base import Process

PROCESSES: dict[str, Callable[[], Process]] = {"ve": VE, "vp": VP, "psld": PSLD}
SCENARIOS = ("exact", "biased")


@dataclass(frozen=True)
class Target:
    """A mixture target and the bias used in the ``biased`` scenario."""

    name: str
    title: str
    make: Callable[[], GaussianMixture]
    sigma_b: float  # the biased score is exact for sigma_eff <= sigma_b
    bias: tuple[float, float, float]  # (tilt, shift, inflate) of the mixture believed above sigma_b


def _rings() -> GaussianMixture:
    return GaussianMixture(*rings_mixture())


def _image64() -> GaussianMixture:
    return GaussianMixture.image_like(10, 8, seed=0)


def _aniso16() -> GaussianMixture:
    return GaussianMixture.random(6, 16, seed=0, scale=1.0, anisotropy=10.0)


TARGETS: dict[str, Target] = {
    "image64": Target("image64", "64-D image-like mixture (10 sharp diagonal modes)", _image64, 1.0, (0.4, 0.5, 1.5)),
    "rings2d": Target("rings2d", "2-D rings (8 Gaussians)", _rings, 0.30, (1.0, 2.0, 1.5)),
    "aniso16": Target("aniso16", "16-D anisotropic mixture (6 comps)", _aniso16, 2.0, (0.4, 0.5, 1.5)),
}


@dataclass
class Problem:
    """One row group of the quality tables: sample ``score_fn`` under ``process`` and compare with ``mixture``."""

    key: str  # e.g. "vp/rings2d/exact"
    title: str
    process: Process
    mixture: Optional[GaussianMixture]  # the target law (exact density and samples); None: see ``metric``
    score_fn: Callable[[Tensor, Tensor], Tensor]
    scenario: str
    note: str = ""
    data_shape: tuple[int, ...] | None = None  # sample shape when there is no mixture (digits: [1, 8, 8])
    metric: Optional[Callable[[Tensor], tuple[float, float]]] = None  # (value, SE), lower is better, no mixture
    pathwise: bool = True  # compute a reference solve (pathwise errors of deterministic samplers)

    @property
    def process_name(self) -> str:
        return type(self.process).__name__

    @property
    def shape(self) -> tuple[int, ...]:
        """One data sample's shape."""
        return (self.mixture.dim,) if self.mixture is not None else tuple(self.data_shape or ())


def oracle_problem(process: str, target: str, scenario: str) -> Problem:
    """An oracle problem: the exact score, or the score biased above the target's sigma_b."""
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; allowed: {', '.join(PROCESSES)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
    proc, tg = PROCESSES[process](), TARGETS[target]
    mix = tg.make()
    note = ""
    if scenario == "exact":
        score: Any = mix.score_fn(proc)
    else:
        score = BiasedScore(mix, perturbed(mix, *tg.bias), proc, tg.sigma_b)
        note = (f"score exact for sigma_eff <= {tg.sigma_b}; above it, the score of the mixture with weights tilted "
                f"by exp(+-{tg.bias[0]}), means shifted {tg.bias[1]} component std, covariances x{tg.bias[2]}")
    return Problem(f"{process}/{target}/{scenario}", f"{type(proc).__name__}, {tg.title}, {scenario} score", proc, mix,
                   score, scenario, note)


def trained_problem(ckpt: str) -> Problem:
    """A network from a fastdiff checkpoint (EMA weights): toy2d rings (exact target density) or digits (fd_digits)."""
    from fastdiff.lightning.checkpoint import load_checkpoint, load_score_model

    data_cfg = load_checkpoint(ckpt)["hyper_parameters"]["config"]["data"]
    model = load_score_model(ckpt)
    proc = model.process
    name = type(proc).__name__.lower()
    if data_cfg.get("name") == "digits":
        from benchmarks.digits_metric import DigitsFD

        metric = DigitsFD()
        return Problem(f"{name}/digits/trained", f"{type(proc).__name__}, 8x8 digits U-Net", proc, None, model,
                       "trained", note=f"network: {ckpt} (EMA weights); metric fd_digits (lower is better) ± "
                       "bootstrap SE", data_shape=metric.shape, metric=metric)
    if data_cfg.get("name") != "toy2d" or data_cfg.get("shape", "rings") != "rings":
        raise ValueError(f"--ckpt {ckpt}: only toy2d rings and digits checkpoints are supported, got data = {data_cfg}")
    noise = data_cfg.get("noise")
    mix = GaussianMixture(*(rings_mixture() if noise is None else rings_mixture(noise)))
    return Problem(f"{name}/rings2d/trained", f"{type(proc).__name__}, 2-D rings, trained network", proc, mix, model,
                   "trained", note=f"network: {ckpt} (EMA weights)")
