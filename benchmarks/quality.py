"""Quality per NFE: every registered sampler and the peers on oracle mixtures and trained toy networks.

    python -m benchmarks quality [--n 1000] [--quick] [--ckpt PATH ...] [--no-peers]

For each problem (process x target x scenario, see :mod:`benchmarks.problems`) every sampler that supports the
process runs at every NFE budget (fixed-step samplers: the largest step count whose NFE fits) or over a tolerance
sweep (adaptive ones, placed in the smallest budget column their measured NFE fits). Metric: sliced Wasserstein-1
(256 directions) to a fixed 10000-sample exact reference set, RBF MMD^2 alongside; noise floor: the same metric
for independent sets of n exact samples. NFE is counted by wrapping the score function and checked against each
sampler's own accounting. Writes benchmarks/results/quality.md, quality.csv and quality_<scenario>.png.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from benchmarks import meta
from benchmarks.noise import BatchNoise
from benchmarks.problems import PROCESSES, SCENARIOS, TARGETS, Problem, oracle_problem, trained_problem
from benchmarks.specs import BUDGETS, RunSpec, build_sampler, our_specs
from fastdiff.metrics.toy import mmd_rbf, random_directions
from fastdiff.oracle import GaussianMixture
from fastdiff.samplers import SamplingNaNError, list_samplers

QUICK_BUDGETS: tuple[int, ...] = (10, 50, 200)


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


@dataclass
class Floor:
    """Metric between independent exact target sets: mean and std over ``sets`` pairs."""

    sw: float
    sw_std: float
    mmd: float
    mmd_std: float


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


class Scorer:
    """SW1 (and MMD^2) of n samples against a fixed large exact reference set; the noise floor of n exact samples.

    SW1 rather than SW2: on ~1000 samples SW2 is dominated by the sparse tails of the projections (its floor std
    is as large as the discretisation errors we want to see); a 10000-sample reference makes the
    reference's share of the noise small. MMD^2 (quadratic cost) compares the first ``n_mmd`` samples of each side.
    """

    def __init__(self, mix: GaussianMixture, n: int, seed: int = 1000, sets: int = 5, n_ref: int = 10000,
                 n_mmd: int = 500) -> None:
        n_ref = n * max(1, -(-n_ref // n))  # a multiple of n, at least n_ref
        self.ref = mix.sample(n_ref, torch.Generator().manual_seed(seed))
        self.n_mmd = min(n, n_mmd)
        self.ref_mmd = self.ref[:self.n_mmd]
        self.sw1 = SlicedW1(self.ref, n)
        vals = torch.tensor([self(mix.sample(n, torch.Generator().manual_seed(seed + 1 + i))) for i in range(sets)])
        self.floor = Floor(vals[:, 0].mean().item(), vals[:, 0].std().item(), vals[:, 1].mean().item(),
                           vals[:, 1].std().item())

    def __call__(self, x: Tensor) -> tuple[float, float]:
        x = x.double().reshape(x.shape[0], -1)
        return self.sw1(x), mmd_rbf(x[:self.n_mmd], self.ref_mmd).item()


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
    sw: float | None = None
    mmd: float | None = None
    seconds: float = 0.0
    status: str = "ok"
    note: str = ""  # e.g. how many samples an adaptive sampler stopped at its NFE cap


@dataclass
class QualityConfig:
    n: int = 500
    n_ref: int = 10000  # exact reference samples for SW1 (rounded up to a multiple of n)
    budgets: tuple[int, ...] = BUDGETS
    processes: tuple[str, ...] = tuple(PROCESSES)
    targets: tuple[str, ...] = tuple(TARGETS)
    scenarios: tuple[str, ...] = SCENARIOS
    ckpts: tuple[str, ...] = ()
    trained_max_nfe: int = 200  # trained networks cost ~10x the oracle per call: budgets above this are left out
    samplers: list[str] | None = None  # None: every registered sampler
    peers: bool = True
    seed: int = 0
    ggf_eps_rel: tuple[float, ...] | None = None
    k_rtols: tuple[float, ...] | None = None
    sde_tols: tuple[float, ...] | None = None


@dataclass
class QualityResult:
    problems: list[Problem]
    floors: dict[str, Floor]
    rows: list[Row]
    budgets: dict[str, tuple[int, ...]]  # problem key -> its NFE budgets
    missing_peers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def problems_of(cfg: QualityConfig) -> list[Problem]:
    out = [oracle_problem(p, t, s) for s in cfg.scenarios for t in cfg.targets for p in cfg.processes]
    return out + [trained_problem(c) for c in cfg.ckpts]


def budgets_for(problem: Problem, cfg: QualityConfig) -> tuple[int, ...]:
    if problem.scenario != "trained":
        return cfg.budgets
    return tuple(b for b in cfg.budgets if b <= cfg.trained_max_nfe) or cfg.budgets[:1]


def run_one(spec: RunSpec, problem: Problem, cfg: QualityConfig, scorer: Scorer) -> Row:
    """Run one spec on one problem; failures become a status, never an exception."""
    from benchmarks import peers

    row = Row(problem.key, spec.family, spec.label, spec.method, spec.budget, spec.tol)
    counter = CallCounter(problem.score_fn, cfg.n)
    noise = BatchNoise(range(cfg.n), base_seed=cfg.seed)  # the same draws for every run of a problem
    shape = (cfg.n, problem.dim)
    start = time.perf_counter()
    try:
        if spec.family == "fastdiff":
            sampler = build_sampler(spec)
            with warnings.catch_warnings():  # ggf warns when samples hit max_nfe: recorded in the note instead
                warnings.simplefilter("ignore", RuntimeWarning)
                res = sampler.sample(counter, problem.process, shape, noise=noise)
            x, row.nfe_sampler = res.x, float(res.nfe)
            stopped = res.info.get("stopped")
            if isinstance(stopped, Tensor) and bool(stopped.any()):
                row.note = f"{int(stopped.sum())}/{cfg.n} samples stopped at max_nfe"
            row.nfe_declared = None if spec.adaptive else float(sampler.nfe)
        else:
            kw = {"cap": 2 * max(budgets_for(problem, cfg))}
            pres = peers.run_peer(spec, counter, problem.process, shape, noise, seed=cfg.seed, **kw)
            x, row.nfe_sampler, row.nfe_declared = pres.x, pres.nfe, pres.nfe_declared
        row.nfe = counter.nfe
        if not bool(torch.isfinite(x).all()):
            raise SamplingNaNError(spec.label, [])
        row.sw, row.mmd = scorer(x)
    except SamplingNaNError:
        row.status, row.nfe = "nan", counter.nfe
    except peers.NFECapExceeded as err:
        row.status, row.nfe = f"over cap ({err})", counter.nfe
    except Exception as err:  # a peer or sampler failing on a problem is a result, not a crash
        row.status, row.nfe = f"error: {type(err).__name__}: {str(err).splitlines()[0][:120]}", counter.nfe
    row.seconds = time.perf_counter() - start
    return row


def run_quality(cfg: QualityConfig, log: Callable[[str], None] = lambda s: None) -> QualityResult:
    """Run every problem x spec of the config (no files written)."""
    from benchmarks import peers

    start = time.perf_counter()
    missing = peers.missing_peers() if cfg.peers else []
    if missing:
        log(f"{peers.MISSING}: {', '.join(missing)} missing; carrying on without them")
    problems = problems_of(cfg)
    floors, rows, budgets = {}, [], {}
    for problem in problems:
        t0 = time.perf_counter()
        budgets[problem.key] = bud = budgets_for(problem, cfg)
        scorer = Scorer(problem.mixture, cfg.n, n_ref=cfg.n_ref)
        floors[problem.key] = scorer.floor
        specs = our_specs(problem.process, bud, cfg.samplers,
                          **({"ggf_eps_rel": cfg.ggf_eps_rel} if cfg.ggf_eps_rel is not None else {}))
        if cfg.peers:
            opts = {k: v for k, v in (("k_rtols", cfg.k_rtols), ("sde_tols", cfg.sde_tols)) if v is not None}
            specs += peers.peer_specs(problem.process, bud, **opts)
        for spec in specs:
            rows.append(run_one(spec, problem, cfg, scorer))
            r = rows[-1]
            nfe, sw = (float("nan") if v is None else v for v in (r.nfe, r.sw))
            log(f"  {problem.key:24s} {r.label:28s} nfe {nfe:7.1f} sw {sw:.4f} {r.seconds:6.2f}s "
                f"{r.status if r.status != 'ok' else ''}")
        log(f"{problem.key}: {len(specs)} runs in {time.perf_counter() - t0:.0f} s")
    return QualityResult(problems, floors, rows, budgets, missing, time.perf_counter() - start)


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0])) if rows else ["problem"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v)
                        for k, v in asdict(r).items()})


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n", type=int, default=None, help="samples per run (default 500, quick 300)")
    ap.add_argument("--quick", action="store_true", help="smoke run: NFE 10/50/200, fewer problems, n = 300")
    ap.add_argument("--ckpt", action="append", default=[],
                    help="a toy2d rings checkpoint (repeatable): the trained scenario")
    ap.add_argument("--trained-max-nfe", type=int, default=200, help="largest NFE budget for --ckpt networks")
    ap.add_argument("--no-peers", action="store_true", help="skip k-diffusion and torchsde")
    ap.add_argument("--samplers", default=None, help="comma-separated subset of our samplers (default: all)")
    ap.add_argument("--budgets", default=None, help="comma-separated NFE budgets (default: 10,20,...,1000)")
    ap.add_argument("--processes", default=None, help=f"comma-separated subset of {','.join(PROCESSES)}")
    ap.add_argument("--targets", default=None, help=f"comma-separated subset of {','.join(TARGETS)}")
    ap.add_argument("--scenarios", default=None, help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=str(meta.RESULTS), help="where quality.md/.csv/.png go")


def config_from_args(args: argparse.Namespace) -> QualityConfig:
    cfg = QualityConfig(ckpts=tuple(args.ckpt), peers=not args.no_peers, seed=args.seed,
                        trained_max_nfe=args.trained_max_nfe,
                        samplers=args.samplers.split(",") if args.samplers else None)
    if args.quick:
        cfg.n, cfg.budgets, cfg.targets, cfg.scenarios = 300, QUICK_BUDGETS, ("rings2d",), ("exact", "biased")
        cfg.ggf_eps_rel, cfg.k_rtols, cfg.sde_tols = (0.2, 0.05), (0.1, 0.02), (0.2, 0.05)
    if args.n is not None:
        cfg.n = args.n
    allowed = {"processes": tuple(PROCESSES), "targets": tuple(TARGETS), "scenarios": SCENARIOS}
    for name, ok in allowed.items():
        value = getattr(args, name)
        if value:
            chosen = tuple(v.strip() for v in value.split(",") if v.strip())
            bad = [v for v in chosen if v not in ok]
            if bad:
                raise SystemExit(f"quality: --{name} {','.join(bad)} unknown; allowed: {', '.join(ok)}")
            setattr(cfg, name, chosen)
    if args.budgets:
        try:
            cfg.budgets = tuple(sorted({int(v) for v in args.budgets.split(",") if v.strip()}))
        except ValueError:
            raise SystemExit(f"quality: --budgets must be comma-separated integers, got {args.budgets!r}") from None
        if not cfg.budgets or cfg.budgets[0] < 1:
            raise SystemExit(f"quality: --budgets must be positive integers, got {args.budgets!r}")
    unknown = [name for name in cfg.samplers or [] if name not in list_samplers()]
    if unknown:
        raise SystemExit(f"quality: --samplers {','.join(unknown)} unknown; registered: {', '.join(list_samplers())}")
    if cfg.n < 2:
        raise SystemExit(f"quality: --n must be >= 2, got {cfg.n}")
    return cfg


def main(args: argparse.Namespace) -> None:
    from benchmarks.plots import plot_quality
    from benchmarks.tables import quality_markdown

    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    command = meta.command_line()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = run_quality(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    write_csv(res.rows, out / "quality.csv")
    pngs = plot_quality(res, cfg.budgets, out)
    text = quality_markdown(res, cfg, command, [p.name for p in pngs])
    (out / "quality.md").write_text(text)
    print(text)
