"""Quality per NFE: every registered sampler and the peers on Gaussian-mixture oracles and trained toy networks.

    python -m benchmarks quality [--n 2000] [--quick] [--trained] [--ckpt PATH ...] [--no-peers]

For each problem (process x target x scenario, see :mod:`benchmarks.problems`) every sampler that supports the
process runs at every NFE budget (fixed-step samplers: the largest step count whose NFE fits) or over a tolerance
sweep (adaptive ones, placed in the smallest budget column their measured NFE fits). Primary metric: the signed
exact log-likelihood gap with its SE, per-mode dispersion and mode-weight error, pathwise error of deterministic
samplers to a converged reference solve (:mod:`benchmarks.instrument`); SW1 and MMD^2 as secondary columns. NFE is
counted by wrapping the score function and checked against each sampler's own accounting. Writes
benchmarks/results/quality.md and quality.csv.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from benchmarks import meta
from benchmarks.noise import BatchNoise
from benchmarks.instrument import Instrument, Metrics, path_errors, path_rms, path_se, pathwise_error
from benchmarks.problems import PROCESSES, SCENARIOS, TARGETS, Problem, oracle_problem, trained_problem
from benchmarks.specs import BUDGETS, RunSpec, build_sampler, our_specs
from fastdiff.metrics.toy import random_directions
from fastdiff.registry import SAMPLERS
from fastdiff.samplers import SamplingNaNError, get_sampler, list_samplers

QUICK_BUDGETS: tuple[int, ...] = (6, 10, 20)
REFERENCE_SAMPLERS = ("edm_heun", "ode_heun")  # the converged ODE solve for pathwise errors: first that supports
# Processes without an EDM view (PSLD): ode_heun converges slowly there (psld/image64/exact, n = 2000: RMS 2.5e-2
# between NFE 399 and 199, 1.6e-2 between 999 and 399); exp_ode (3rd-order exponential multistep) is within
# 1.5e-5 of its own NFE-1999 solve at NFE 399 and 4.6e-5 at 299, so at 1.5 x ref_nfe = 598 its reported error
# (the difference to NFE 299) is ~5e-5 on image64 and ~3e-4 on rings2d, at ~22 s a problem.
PHASE_REFERENCE = ("exp_ode", 1.5)  # (sampler, factor on ref_nfe)


class CallCounter:
    """score_fn wrapper counting evaluated rows (the benchmark's own NFE count, independent of the sampler's)."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], n: int) -> None:
        self.fn, self.n, self.rows = fn, n, 0

    def parameters(self) -> Any:
        """Forward the network's parameters (CountedScore casts inputs to the network dtype)."""
        params = getattr(self.fn, "parameters", None)
        return params() if callable(params) else iter(())

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        self.rows += z.shape[0]
        return self.fn(z, t)

    @property
    def nfe(self) -> float:
        return self.rows / self.n


class SlicedW1:
    """Sliced Wasserstein-1 of n samples to a fixed reference set of m = k n samples, reference sorted once.

    The same quantity as ``sliced_wasserstein(x, ref, n_proj, p=1, seed)`` of :mod:`fastdiff.metrics.toy`: with
    m = k n the quantile coupling pairs the i-th smallest sample with the i-th block of k sorted reference
    values, so a call is one sort of n projections and a broadcast, O(n_proj m), with no re-sorting of the reference.
    """

    def __init__(self, ref: Tensor, n: int, n_proj: int = 256, seed: int = 0) -> None:
        m = ref.shape[0]
        if m % n:
            raise ValueError(f"SlicedW1 needs a reference size that is a multiple of n = {n}, got {m}")
        self.n, self.k = n, m // n
        self.w = random_directions(ref.shape[1], n_proj, seed)
        self.ref_sorted = (self.w @ ref.double().T).sort(-1).values.reshape(n_proj, n, self.k).float()

    def __call__(self, x: Tensor) -> float:
        if x.shape[0] != self.n:
            raise ValueError(f"SlicedW1 was set up for {self.n} samples, got {x.shape[0]}")
        xs = (self.w @ x.double().T).sort(-1).values.float()  # float32 differences: half the memory traffic
        return (xs[:, :, None] - self.ref_sorted).abs().mean(dtype=torch.float64).item()


@dataclass
class Row:
    """One run's result (one line of quality.csv)."""

    problem: str
    family: str
    label: str
    method: str
    budget: int | None
    tol: float | None
    nfe: float | None = None  # counted by the benchmark's wrapper, mean per sample
    nfe_sampler: float | None = None  # counted by the sampler's own CountedScore (ours) / the peer adapter's
    nfe_declared: float | None = None  # the sampler's own accounting (nfe_for(steps), a peer's formula or info)
    deterministic: bool = False
    gap: float | None = None  # signed mean log-likelihood gap (> 0 blurred, < 0 over-sharp)
    gap_se: float | None = None
    disp: float | None = None  # dispersion ratio, weighted geometric mean over modes
    disp_worst: float | None = None
    wtv: float | None = None  # mode-weight total variation
    path: float | None = None  # pathwise RMS error to the reference solve (deterministic samplers)
    path_se: float | None = None
    sw: float | None = None
    mmd: float | None = None
    seconds: float = 0.0
    status: str = "ok"
    note: str = ""  # e.g. how many samples an adaptive sampler stopped at its NFE cap
    metrics: Metrics | None = field(default=None, repr=False)  # in memory only (per-sample log p for pairing)
    path_sq: Tensor | None = field(default=None, repr=False)  # in memory: per-sample squared path error (pairing)

    @property
    def abs_gap(self) -> float | None:
        return None if self.gap is None else abs(self.gap)


@dataclass
class QualityConfig:
    n: int = 2000
    n_ref: int = 40000  # exact reference samples (rounded up to a multiple of n)
    ref_nfe: int = 399  # NFE of the converged reference solve for pathwise errors (checked against half of it)
    budgets: tuple[int, ...] = BUDGETS
    processes: tuple[str, ...] = tuple(PROCESSES)
    targets: tuple[str, ...] = ("image64", "rings2d")
    scenarios: tuple[str, ...] = ("exact",)
    ckpts: tuple[str, ...] = ()
    n_digits: int = 500  # samples per run on digits networks (a U-Net call costs ~100x the oracle's per sample)
    digits_max_nfe: int = 20  # digits networks: budgets up to this
    trained_max_nfe: int = 100  # trained networks cost ~10x the oracle per call: budgets above this are left out
    samplers: list[str] | None = None  # None: every registered sampler
    peers: bool = True
    seed: int = 0
    ggf_eps_rel: tuple[float, ...] | None = None
    k_rtols: tuple[float, ...] | None = None
    sde_tols: tuple[float, ...] | None = None
    only: tuple[str, ...] | None = None  # problem keys to run (None: all); set by the parallel runner's workers


@dataclass
class QualityResult:
    problems: list[Problem]
    instruments: dict[str, Instrument]
    ref_error: dict[str, float]  # problem -> pathwise RMS between the reference solve and one at half its NFE
    rows: list[Row]
    budgets: dict[str, tuple[int, ...]]  # problem key -> its NFE budgets
    missing_peers: list[str] = field(default_factory=list)
    seconds: float = 0.0  # summed over problems (one process each at a time)
    wall_seconds: float | None = None  # wall clock of a parallel run (--jobs), when there was one


def problems_of(cfg: QualityConfig) -> list[Problem]:
    out = [oracle_problem(p, t, s) for s in cfg.scenarios for t in cfg.targets for p in cfg.processes]
    out += [trained_problem(c) for c in cfg.ckpts]
    return out if cfg.only is None else [p for p in out if p.key in cfg.only]


def budgets_for(problem: Problem, cfg: QualityConfig) -> tuple[int, ...]:
    if problem.scenario != "trained":
        return cfg.budgets
    cap = cfg.trained_max_nfe if problem.mixture is not None else cfg.digits_max_nfe
    return tuple(b for b in cfg.budgets if b <= cap) or cfg.budgets[:1]


def n_of(problem: Problem, cfg: QualityConfig) -> int:
    """Samples per run: n, or n_digits on networks without an exact density (digits)."""
    return cfg.n if problem.mixture is not None else min(cfg.n, cfg.n_digits)


def deterministic(spec: RunSpec) -> bool:
    """Whether a run is a deterministic solve (pathwise error defined): ours by the sampler class, peers by name."""
    from benchmarks import peers

    if spec.family == "fastdiff":
        return not SAMPLERS.get(spec.method).stochastic
    return spec.method in peers.DETERMINISTIC


def draw(spec: RunSpec, problem: Problem, cfg: QualityConfig, counter: "CallCounter", row: Row) -> Tensor:
    """Samples of one run (fills the row's NFE accounting and note); raises on failure."""
    from benchmarks import peers

    n = n_of(problem, cfg)
    noise = BatchNoise(range(n), base_seed=cfg.seed)  # the same draws (prior first) for every run of a problem
    shape = (n, *problem.shape)
    if spec.family == "fastdiff":
        sampler = build_sampler(spec)
        with warnings.catch_warnings():  # ggf warns when samples hit max_nfe: recorded in the note instead
            warnings.simplefilter("ignore", RuntimeWarning)
            res = sampler.sample(counter, problem.process, shape, noise=noise)
        x, row.nfe_sampler = res.x, float(res.nfe)
        stopped = res.info.get("stopped")
        if isinstance(stopped, Tensor) and bool(stopped.any()):
            row.note = f"{int(stopped.sum())}/{n} samples stopped at max_nfe"
        row.nfe_declared = None if spec.adaptive else float(sampler.nfe)
    else:
        kw = {"cap": 2 * max(budgets_for(problem, cfg))}
        pres = peers.run_peer(spec, counter, problem.process, shape, noise, seed=cfg.seed, **kw)
        x, row.nfe_sampler, row.nfe_declared = pres.x, pres.nfe, pres.nfe_declared
    return x


def run_one(spec: RunSpec, problem: Problem, cfg: QualityConfig, instrument: Instrument | None,
            x_ref: Tensor | None = None) -> Row:
    """Run one spec on one problem; failures become a status, never an exception."""
    from benchmarks import peers

    row = Row(problem.key, spec.family, spec.label, spec.method, spec.budget, spec.tol,
              deterministic=deterministic(spec))
    counter = CallCounter(problem.score_fn, n_of(problem, cfg))
    start = time.perf_counter()
    try:
        x = draw(spec, problem, cfg, counter, row)
        row.nfe = counter.nfe
        if not bool(torch.isfinite(x).all()):
            raise SamplingNaNError(spec.label, [])
        if instrument is not None:
            m = row.metrics = instrument(x)
            row.gap, row.gap_se, row.disp, row.disp_worst, row.wtv, row.sw, row.mmd = (
                m.gap, m.gap_se, m.disp, m.disp_worst, m.wtv, m.sw, m.mmd)
        elif problem.metric is not None:  # a network without an exact density (digits): its own metric and SE
            row.gap, row.gap_se = problem.metric(x)
        if x_ref is not None and row.deterministic:
            row.path_sq = path_errors(x, x_ref)
            row.path, row.path_se = path_rms(row.path_sq), path_se(row.path_sq)
    except SamplingNaNError:
        row.status, row.nfe = "nan", counter.nfe
    except peers.NFECapExceeded as err:
        row.status, row.nfe = f"over cap ({err})", counter.nfe
    except Exception as err:  # a peer or sampler failing on a problem is a result, not a crash
        row.status, row.nfe = f"error: {type(err).__name__}: {str(err).splitlines()[0][:120]}", counter.nfe
    row.seconds = time.perf_counter() - start
    return row


def reference_plan(process: Any, ref_nfe: int) -> tuple[str | None, int]:
    """The reference sampler and its NFE: exp_ode at 1.5 ref_nfe without an EDM view (PSLD), else the first of
    REFERENCE_SAMPLERS that supports the process at ref_nfe."""
    name, factor = PHASE_REFERENCE
    if not process.supports("edm_view") and name in list_samplers() and SAMPLERS.get(name).supports(process):
        return name, int(ref_nfe * factor)
    return next((s for s in REFERENCE_SAMPLERS if s in list_samplers() and SAMPLERS.get(s).supports(process)),
                None), ref_nfe


def reference_solve(problem: Problem, cfg: QualityConfig) -> tuple[Tensor | None, float]:
    """A converged probability-flow solve from the same prior draws (for pathwise errors) and its own error: the
    RMS difference to the same solver at about half the NFE (a solver of order p >= 1 has at NFE N about 1/(2^p - 1)
    of that difference as its error, so the reported number bounds the reference's error; pessimistic where a few
    samples of the half-NFE solve go astray, e.g. trained psld/rings2d: 1.5e-2 reported, 6.6e-4 to a 2x-NFE solve)."""
    name, ref_nfe = reference_plan(problem.process, cfg.ref_nfe)
    if name is None or ref_nfe <= 0:
        return None, float("nan")
    # the process's default end time, pinned: exp_ode's budget-aware default would end a 600-NFE solve later, and
    # the reference is the endpoint every default-ending sampler converges to
    options = {"t_eps": float(problem.process.t_eps_sample)} if name == PHASE_REFERENCE[0] else {}
    out = []
    for nfe in (ref_nfe, ref_nfe // 2):
        row = Row(problem.key, "fastdiff", name, name, nfe, None)
        out.append(draw(RunSpec("fastdiff", name, budget=nfe, options=options), problem, cfg,
                        CallCounter(problem.score_fn, cfg.n), row))
    return out[0], pathwise_error(out[1], out[0])


def run_quality(cfg: QualityConfig, log: Callable[[str], None] = lambda s: None,
                on_problem: Callable[..., None] | None = None,
                problems: list[Problem] | None = None) -> QualityResult:
    """Run every problem x spec of the config (``problems``: the config's, already built); ``on_problem(problem,
    rows, instrument, ref_error, budgets, seconds)`` after each problem (the CLI stores it as a part)."""
    from benchmarks import peers

    start = time.perf_counter()
    missing = peers.missing_peers() if cfg.peers else []
    if missing:
        log(f"{peers.MISSING}: {', '.join(missing)} missing; carrying on without them")
    problems = problems_of(cfg) if problems is None else problems
    instruments, ref_error, rows, budgets = {}, {}, [], {}
    for problem in problems:
        t0 = time.perf_counter()
        budgets[problem.key] = bud = budgets_for(problem, cfg)
        if problem.mixture is not None:
            instruments[problem.key] = Instrument(problem.mixture, cfg.n, n_ref=cfg.n_ref)
        x_ref, ref_error[problem.key] = reference_solve(problem, cfg) if problem.pathwise else (None, float("nan"))
        log(f"{problem.key}: setup {time.perf_counter() - t0:.0f} s, reference error {ref_error[problem.key]:.2e}")
        specs = our_specs(problem.process, bud, cfg.samplers,
                          **({"ggf_eps_rel": cfg.ggf_eps_rel} if cfg.ggf_eps_rel is not None else {}))
        if cfg.peers:
            opts = {k: v for k, v in (("k_rtols", cfg.k_rtols), ("sde_tols", cfg.sde_tols)) if v is not None}
            specs += peers.peer_specs(problem.process, bud, default_ending="image64" in problem.key, **opts)
        for spec in specs:
            rows.append(run_one(spec, problem, cfg, instruments.get(problem.key), x_ref))
            r = rows[-1]
            nfe, gap, se, path = (float("nan") if v is None else v for v in (r.nfe, r.gap, r.gap_se, r.path))
            log(f"  {problem.key:24s} {r.label:28s} nfe {nfe:6.1f} gap {gap:+9.3f} ± {se:.3f} path {path:.2e} "
                f"{r.seconds:6.2f}s {r.status if r.status != 'ok' else ''}")
        log(f"{problem.key}: {len(specs)} runs in {time.perf_counter() - t0:.0f} s")
        if on_problem is not None:
            on_problem(problem, [r for r in rows if r.problem == problem.key], instruments.get(problem.key),
                       ref_error[problem.key], bud, time.perf_counter() - t0)
    return QualityResult(problems, instruments, ref_error, rows, budgets, missing, time.perf_counter() - start)


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        names = [k.name for k in fields(Row) if k.name not in ("metrics", "path_sq")]
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v)
                        for k, v in ((k, getattr(r, k)) for k in names)})
