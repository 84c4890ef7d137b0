"""Per-problem parts of a quality run, so a long run can be split into short commands and assembled afterwards.

    python -m benchmarks quality --processes vp --targets image64     # runs one problem, stores its part
    python -m benchmarks quality --assemble                           # quality.md from every stored part

A part holds plain data only (rows as dicts, per-sample log-densities as tensors, the reference's log-density
variance and size) and loads with ``torch.load(weights_only=True)``. Parts live under the git-ignored
benchmarks/.cache/quality/.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from benchmarks.instrument import Metrics
from benchmarks.meta import REPO

PARTS = REPO / "benchmarks" / ".cache" / "quality"


@dataclass
class RefStats:
    """What the paired comparison needs of an instrument: the reference's log-density variance and size."""

    ref_var: float
    m: int


@dataclass
class PartProblem:
    """A stored problem's identity (what the tables read of a Problem)."""

    key: str
    title: str
    note: str
    scenario: str
    has_density: bool

    @property
    def mixture(self) -> bool | None:  # the tables only test ``mixture is not None``
        return True if self.has_density else None


def part_path(key: str, root: Path = PARTS) -> Path:
    return root / (key.replace("/", "_") + ".pt")


def save_part(problem: Any, rows: list[Any], stats: RefStats | None, ref_error: float, budgets: tuple[int, ...],
              command: str, seconds: float, root: Path = PARTS, extra: dict[str, Any] | None = None,
              add: bool = False) -> Path:
    """Store one problem's results (``add``: merged into the stored part, see :func:`merge_into`)."""
    names = [f.name for f in fields(rows[0])] if rows else []
    data = {
        "problem": {"key": problem.key, "title": problem.title, "note": problem.note, "scenario": problem.scenario,
                    "has_density": problem.mixture is not None},
        "rows": [{k: getattr(r, k) for k in names if k not in ("metrics", "path_sq")} for r in rows],
        "logp": [None if r.metrics is None else r.metrics.logp.clone() for r in rows],
        "path_sq": [None if r.path_sq is None else r.path_sq.clone() for r in rows],
        "stats": None if stats is None else {"ref_var": stats.ref_var, "m": stats.m},
        "ref_error": ref_error, "budgets": list(budgets), "command": command, "seconds": seconds, **(extra or {})}
    root.mkdir(parents=True, exist_ok=True)
    path = part_path(problem.key, root)
    if add:
        data = merge_into(path, data)
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)  # atomic: a killed run leaves the previous part intact
    return path


def merge_into(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the rows of the part stored at ``path`` that it does not re-run (same family, label, budget)
    kept in front: samplers added later join a part without re-running the rest. Valid because a part's reference
    sample and prior draws depend only on the problem, n and seed (both parts come from the same parts directory)."""
    if not path.exists():
        return new
    old = torch.load(path, weights_only=True)
    old_n, new_n = old.get("n_samples"), new.get("n_samples")  # None: a part stored before parts recorded n
    if None not in (old_n, new_n) and old_n != new_n:
        # rows of different sample sizes would share one table line and one paired comparison (the CLI refuses
        # this before any work: quality_cli.refuse_other_n; this guards every other caller)
        raise ValueError(f"--add: the part {path} ran with n = {old['n_samples']}, this run with n = "
                         f"{new['n_samples']}; rerun the whole problem instead (no --add)")
    ran = {(r["family"], r["label"], r["budget"]) for r in new["rows"]}
    keep = [i for i, r in enumerate(old["rows"]) if (r["family"], r["label"], r["budget"]) not in ran]
    merged = dict(new)
    merged["rows"] = [old["rows"][i] for i in keep] + new["rows"]
    merged["logp"] = [old["logp"][i] for i in keep] + new["logp"]
    old_sq = old.get("path_sq", [None] * len(old["rows"]))  # parts stored before path_sq existed
    merged["path_sq"] = [old_sq[i] for i in keep] + new["path_sq"]
    merged["command"] = old["command"] + " ; " + new["command"]
    merged["seconds"] = old["seconds"] + new["seconds"]
    merged["peers"] = old.get("peers", False) or new.get("peers", False)
    return merged


def load_parts(order: list[str] | None = None, root: Path = PARTS) -> list[dict[str, Any]]:
    """Every stored part (``order``: problem keys to put first, in that order)."""
    parts = [torch.load(p, weights_only=True) for p in sorted(root.glob("*.pt"))]
    rank = {k: i for i, k in enumerate(order or [])}
    return sorted(parts, key=lambda d: (rank.get(d["problem"]["key"], len(rank)), d["problem"]["key"]))


def rebuild(part: dict[str, Any], row_cls: type) -> tuple[PartProblem, list[Any], RefStats | None]:
    """Problem, rows (metrics restored for the paired comparison) and reference statistics of a part."""
    rows = []
    for d, lp, sq in zip(part["rows"], part["logp"], part.get("path_sq", [None] * len(part["rows"]))):
        r = row_cls(**d)
        r.path_sq = sq
        if lp is not None:
            r.metrics = Metrics(r.gap, r.gap_se, r.disp, r.disp_worst, r.wtv, r.sw, r.mmd, lp)
        rows.append(r)
    stats = None if part["stats"] is None else RefStats(**part["stats"])
    return PartProblem(**part["problem"]), rows, stats
