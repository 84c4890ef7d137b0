"""Command line of the quality benchmark: ``python -m benchmarks quality [options]`` (see benchmarks.quality)."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import meta
from benchmarks.instrument import Instrument
from benchmarks.problems import PROCESSES, SCENARIOS, TARGETS, Problem
from benchmarks.quality import (QUICK_BUDGETS, QualityConfig, QualityResult, Row, n_of, problems_of, run_quality,
                                write_csv)
from benchmarks.specs import KARRAS
from fastdiff.samplers import list_samplers


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n", type=int, default=None, help="samples per run (default 2000, quick 500)")
    ap.add_argument("--n-ref", type=int, default=None, help="exact reference samples (default 40000)")
    ap.add_argument("--ref-nfe", type=int, default=None, help="NFE of the pathwise reference solve (default 399)")
    ap.add_argument("--quick", action="store_true", help="smoke run: NFE 6/10/20, 2-D rings only, n = 500")
    ap.add_argument("--trained", action="store_true",
                    help="add every network cached by `python -m benchmarks checkpoints`")
    ap.add_argument("--only-trained", action="store_true", help="no mixture problems: only the trained networks")
    ap.add_argument("--ckpt", action="append", default=[], help="a toy2d rings or digits checkpoint (repeatable)")
    ap.add_argument("--trained-max-nfe", type=int, default=100, help="largest NFE budget for toy2d networks")
    ap.add_argument("--digits-max-nfe", type=int, default=20, help="largest NFE budget for digits networks")
    ap.add_argument("--n-digits", type=int, default=500, help="samples per run on digits networks")
    ap.add_argument("--no-peers", action="store_true", help="skip k-diffusion, diffusers and torchsde")
    ap.add_argument("--samplers", default=None,
                    help="comma-separated subset of our samplers (default: all); NAME@karras: that Karras variant alone")
    ap.add_argument("--budgets", default=None, help="comma-separated NFE budgets (default: 5,6,8,...,100)")
    ap.add_argument("--processes", default=None, help=f"comma-separated subset of {','.join(PROCESSES)}")
    ap.add_argument("--targets", default=None, help=f"comma-separated subset of {','.join(TARGETS)}")
    ap.add_argument("--scenarios", default=None, help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes, the problems split over them (2 on a 2-core machine); same tables")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=str(meta.RESULTS), help="where quality.md/.csv go")
    ap.add_argument("--add", action="store_true",
                    help="merge this run's rows into the stored parts (e.g. --samplers NEW --no-peers) instead of "
                         "replacing them")
    ap.add_argument("--assemble", action="store_true",
                    help="run nothing: write quality.md/.csv from every part stored by earlier runs with the same "
                         "--n, --budgets and --seed (so a long run can be split into short commands)")


def _bad(what: str, allowed: str) -> SystemExit:
    print(f"error: {what} — {allowed}", file=sys.stderr)
    return SystemExit(2)


def config_from_args(args: argparse.Namespace) -> QualityConfig:
    """The run's configuration; bad input raises SystemExit(2) after one ``error:`` line, before any work."""
    from benchmarks.checkpoints import cached

    ckpts = list(args.ckpt) + ([str(p) for p in cached().values()] if args.trained else [])
    cfg = QualityConfig(ckpts=tuple(dict.fromkeys(ckpts)), peers=not args.no_peers, seed=args.seed,
                        trained_max_nfe=args.trained_max_nfe, digits_max_nfe=args.digits_max_nfe,
                        n_digits=args.n_digits,
                        samplers=args.samplers.split(",") if args.samplers else None)
    if args.quick:
        cfg.n, cfg.budgets, cfg.targets, cfg.n_ref = 500, QUICK_BUDGETS, ("rings2d",), 10000
        cfg.ggf_eps_rel, cfg.k_rtols, cfg.sde_tols = (0.2, 0.05), (0.1, 0.02), (0.2, 0.05)
    if args.only_trained:
        cfg.targets = ()
    for name in ("n", "n_ref", "ref_nfe"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    allowed = {"processes": tuple(PROCESSES), "targets": tuple(TARGETS), "scenarios": SCENARIOS}
    for name, ok in allowed.items():
        value = getattr(args, name)
        if value:
            chosen = tuple(v.strip() for v in value.split(",") if v.strip())
            bad = [v for v in chosen if v not in ok]
            if bad:
                raise _bad(f"quality --{name} {','.join(bad)} unknown", f"allowed: {', '.join(ok)}")
            setattr(cfg, name, chosen)
    if args.budgets:
        try:
            cfg.budgets = tuple(sorted({int(v) for v in args.budgets.split(",") if v.strip()}))
        except ValueError:
            raise _bad(f"quality --budgets {args.budgets!r} is not a list of integers",
                       "comma-separated positive integers") from None
        if not cfg.budgets or cfg.budgets[0] < 1:
            raise _bad(f"quality --budgets {args.budgets!r}", "comma-separated positive integers")
    unknown = [name for name in cfg.samplers or [] if name.removesuffix(KARRAS) not in list_samplers()]
    if unknown:
        raise _bad(f"quality --samplers {','.join(unknown)} unknown", f"registered: {', '.join(list_samplers())}")
    if args.jobs < 1:
        raise _bad(f"quality --jobs {args.jobs}", "an integer >= 1")
    if cfg.n < 2 or cfg.n_ref < 2:
        raise _bad(f"quality --n {cfg.n} / --n-ref {cfg.n_ref}", "integers >= 2")
    for c in cfg.ckpts:
        if not Path(c).is_file():
            raise _bad(f"quality --ckpt {c} does not exist", "a fastdiff checkpoint file")
    return cfg


def parts_dir(cfg: QualityConfig) -> Path:
    """Where the parts of runs with this configuration's n, budgets and seed are stored."""
    from benchmarks.quality_cache import PARTS

    return PARTS / f"n{cfg.n}_b{'-'.join(map(str, cfg.budgets))}_s{cfg.seed}"


def assembled(cfg: QualityConfig, keys: list[str] | None = None,
              root: Path | None = None) -> tuple[QualityResult, list[str]]:
    """A result made of every stored part of this configuration (or of the problems ``keys``), and the commands
    that made them."""
    from benchmarks.quality_cache import load_parts, rebuild

    order = [f"{p}/{t}/{s}" for s in SCENARIOS + ("trained",) for t in (*TARGETS, "digits") for p in PROCESSES]
    res = QualityResult([], {}, {}, [], {}, [], 0.0)
    commands: list[str] = []
    for part in load_parts(order, root or parts_dir(cfg)):
        if keys is not None and part["problem"]["key"] not in keys:
            continue
        prob, rows, stats = rebuild(part, Row)
        res.problems.append(prob)  # type: ignore[arg-type]
        res.rows += rows
        res.budgets[prob.key] = tuple(part["budgets"])
        res.ref_error[prob.key] = part["ref_error"]
        if stats is not None:
            res.instruments[prob.key] = stats  # type: ignore[assignment]
        res.seconds += part["seconds"]
        cfg.n_ref = part.get("n_ref", cfg.n_ref)  # as the parts ran
        cfg.ref_nfe, cfg.peers = part.get("ref_nfe", cfg.ref_nfe), part.get("peers", cfg.peers)
        if not part["problem"]["has_density"]:  # digits: the table states the n these parts ran with
            cfg.n_digits = part.get("n_samples", cfg.n_digits)
        commands.append(part["command"])
    if not res.problems:
        raise _bad(f"quality --assemble found no parts in {parts_dir(cfg)}",
                   "run `python -m benchmarks quality` with the same --n/--budgets/--seed first")
    return res, list(dict.fromkeys(commands))


def refuse_other_n(cfg: QualityConfig, problems: list[Problem], root: Path | None = None) -> None:
    """--add merges this run's rows into the stored parts: before any work, refuse a problem whose stored part ran
    with another n (its rows would share one table line and one paired comparison with this run's)."""
    from benchmarks.quality_cache import part_path

    for problem in problems:
        path = part_path(problem.key, root or parts_dir(cfg))
        stored = torch.load(path, weights_only=True).get("n_samples") if path.exists() else None
        if stored is not None and stored != n_of(problem, cfg):
            raise _bad(f"quality --add: the stored part of {problem.key} ran with n = {stored}, this run's is "
                       f"{n_of(problem, cfg)}", "the stored part's --n / --n-digits, or no --add (the run replaces it)")


@dataclass(frozen=True)
class PartStore:
    """Stores each finished problem as a part (picklable, so the parallel runner's workers can use it)."""

    cfg: QualityConfig
    command: str
    add: bool
    root: Path | None = None  # where the parts go (default: parts_dir(cfg))

    def __call__(self, problem: Problem, rows: list[Row], inst: Instrument | None, ref_error: float,
                 budgets: tuple[int, ...], seconds: float) -> None:
        from benchmarks.quality_cache import RefStats, save_part

        cfg = self.cfg
        stats = None if inst is None else RefStats(inst.ref_var, inst.m)
        save_part(problem, rows, stats, ref_error, budgets, self.command, seconds, self.root or parts_dir(cfg),
                  extra={"n_ref": cfg.n_ref, "ref_nfe": cfg.ref_nfe, "peers": cfg.peers,
                         "n_samples": n_of(problem, cfg)}, add=self.add)


def main(args: argparse.Namespace) -> None:
    from benchmarks.quality_jobs import run_parallel
    from benchmarks.tables import quality_markdown

    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    command = meta.command_line()
    problems = [] if args.assemble else problems_of(cfg)
    if args.add:
        refuse_other_n(cfg, problems)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.assemble:
        res, commands = assembled(cfg)
    elif args.jobs > 1:
        start = time.perf_counter()
        keys = [p.key for p in problems]
        run_parallel(cfg, keys, args.jobs, PartStore(cfg, command, args.add), threads=args.threads)
        res, _ = assembled(cfg, keys)
        res.wall_seconds, commands = time.perf_counter() - start, [command]
    else:
        res = run_quality(cfg, log=lambda s: print(s, file=sys.stderr, flush=True),
                          on_problem=PartStore(cfg, command, args.add), problems=problems)
        commands = [command]
    write_csv(res.rows, out / "quality.csv")
    text = quality_markdown(res, cfg, commands)
    (out / "quality.md").write_text(text)
    print(text)
