"""Sampler x budget runs of an evaluation, built from ``[{sampler, nfe | options list, options, label}]`` entries."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from fastdiff.registry import SAMPLERS
from fastdiff.samplers import get_sampler

from fastdiff.schema.evaluation import SAMPLER_KEYS  # noqa: E402  (the schema layer owns the keys)


@dataclass
class EvalRun:
    """One sampler at one budget: ``budget`` is "nfe<N>" or, for adaptive samplers, "k=v,..." of its options."""

    label: str
    budget: str
    sampler: Any


def _adaptive_runs(name: str, label: str, entry: dict[str, Any], opts: Any) -> list[EvalRun]:
    if "nfe" in entry:
        raise ValueError(f"sampler {name!r} is adaptive: give tolerances as a list of option dicts in "
                         "options (e.g. [{eps_rel: 0.05}, {eps_rel: 0.1}]), not nfe")
    runs = []
    for o in (opts if isinstance(opts, list) else [opts]):
        if not isinstance(o, dict):
            raise ValueError(f"options entries must be mappings, got {o!r}")
        budget = ",".join(f"{k}={v}" for k, v in sorted(o.items())) or "default"
        runs.append(EvalRun(label, budget, get_sampler(name, **o)))
    return runs


def _budget_runs(name: str, label: str, entry: dict[str, Any], opts: Any) -> list[EvalRun]:
    nfe = entry.get("nfe")
    nfes = nfe if isinstance(nfe, list) else [nfe]
    if nfe is None or not nfes or any(isinstance(n, bool) or not isinstance(n, int) for n in nfes):
        raise ValueError(f"nfe: required, an integer or a list of integers; got {nfe!r}")
    if not isinstance(opts, dict):
        raise ValueError("options: a list of option dicts is for adaptive samplers; use one entry per "
                         "option set (with distinct labels)")
    return [EvalRun(label, f"nfe{n}", get_sampler(name, nfe=n, **opts)) for n in nfes]


def build_runs(entries: Sequence[dict[str, Any]], where: str = "samplers") -> list[EvalRun]:
    """Sampler x budget runs from ``[{sampler, nfe | options list, options, label}]`` (adaptive: option dicts)."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"{where}: samplers must be a non-empty list of "
                         "{sampler: NAME, nfe: [N, ...], options: {...}}")
    runs: list[EvalRun] = []
    for j, e in enumerate(entries):
        w = f"{where}[{j}]"
        if not isinstance(e, dict) or "sampler" not in e:
            raise ValueError(f"{w}: expected a mapping with a 'sampler' key, got {e!r}")
        bad = sorted(set(e) - set(SAMPLER_KEYS))
        if bad:
            raise ValueError(f"{w}.{bad[0]}: unknown key; allowed: {', '.join(SAMPLER_KEYS)}")
        name, opts = e["sampler"], e.get("options") or {}
        try:
            cls = SAMPLERS.get(name)
        except KeyError as err:
            raise ValueError(f"{w}: {err}") from None
        label = e.get("label", name)
        if not isinstance(label, str) or not label or "/" in label:
            raise ValueError(f"{w}.label: must be a non-empty string without '/', got {label!r}")
        try:
            runs.extend((_adaptive_runs if cls.adaptive else _budget_runs)(name, label, e, opts))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{w}: {err}") from None
    seen: set[tuple[str, str]] = set()
    for r in runs:
        if (r.label, r.budget) in seen:
            raise ValueError(f"{where}: {r.label!r} at {r.budget} appears twice; give the entries distinct labels")
        seen.add((r.label, r.budget))
    return runs
