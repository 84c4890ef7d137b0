"""Run specifications of the quality benchmark: which sampler (ours or a peer's) at which NFE budget or tolerance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastdiff.processes.base import Process
from fastdiff.registry import SAMPLERS
from fastdiff.samplers import Sampler, SamplerError, get_sampler, list_samplers

BUDGETS: tuple[int, ...] = (5, 6, 8, 10, 15, 20, 35, 50, 100)
# ggf's tolerance sweep: eps_rel, with eps_abs kept at the default ratio eps_abs / eps_rel = 0.0078 / 0.05
GGF_EPS_REL: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.02)
KARRAS_VARIANT = "karras"  # the variant name of one of our samplers run on the Karras grid
KARRAS = f"@{KARRAS_VARIANT}"  # its label suffix (RunSpec.label: method@variant)


@dataclass(frozen=True)
class RunSpec:
    """One sampling run: ``family`` 'fastdiff' or 'peer', a method, and a budget (fixed-step) or a tolerance."""

    family: str
    method: str
    budget: int | None = None  # NFE budget of fixed-step samplers (the run's NFE is <= budget)
    tol: float | None = None  # tolerance of adaptive samplers (the run's NFE is measured)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    variant: str = ""  # a named non-default option set of ours (e.g. 'karras': grid='karras'); part of the label

    @property
    def adaptive(self) -> bool:
        return self.budget is None

    @property
    def label(self) -> str:
        """Row label in the tables (adaptive runs: one row per tolerance; variants: ``method@variant``)."""
        name = f"{self.method}@{self.variant}" if self.variant else self.method
        return name if self.tol is None else f"{name} tol={self.tol:g}"


def ggf_options(eps_rel: float, max_nfe: int) -> dict[str, Any]:
    return {"eps_rel": eps_rel, "eps_abs": 0.0078 * eps_rel / 0.05, "max_nfe": max_nfe}


def build_sampler(spec: RunSpec) -> Sampler:
    """The fastdiff sampler of a spec.

    compute_batch 0: the benchmark counts the rows its score function sees as an NFE check independent of the
    sampler's own count, and padding to a fixed micro-batch would add rows that are not evaluations.
    """
    options = {"compute_batch": 0, **spec.options}
    if spec.adaptive:
        return get_sampler(spec.method, **options)
    return get_sampler(spec.method, nfe=spec.budget, **options)


def karras_variant(cls: type[Sampler], process: Process) -> bool:
    """Whether the benchmark also runs ``cls`` on the Karras grid: an EDM-view sampler with a grid option whose
    default is another grid. The peers' EDM-view solvers run on Karras grids and (diffusers) on their own default
    schedule, so ours run on their default grid and on Karras, the same two-schedule choice a user has."""
    options = getattr(cls, "Options", None)
    fields = getattr(options, "__dataclass_fields__", {})
    return (process.supports("edm_view") and "grid" in fields and "sigma_min" in fields
            and fields["grid"].default != "karras")


def our_specs(process: Process, budgets: tuple[int, ...] = BUDGETS, samplers: list[str] | None = None,
              ggf_eps_rel: tuple[float, ...] = GGF_EPS_REL, variants: bool = True) -> list[RunSpec]:
    """Every registered sampler (or ``samplers``) that supports ``process``, with default options, at every budget
    it can meet (budgets below a sampler's minimum NFE are left out); adaptive samplers over a tolerance sweep.
    ``variants``: EDM-view samplers whose default grid is not Karras run on the Karras grid too (``karras_variant``);
    a name ``NAME@karras`` in ``samplers`` selects that variant alone (to add it to stored parts)."""
    names = list_samplers() if samplers is None else samplers
    unknown = [n for n in names if n.removesuffix(KARRAS) not in SAMPLERS]
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown}; registered: {', '.join(list_samplers())}")
    specs: list[RunSpec] = []
    for entry in names:
        name, only_variant = entry.removesuffix(KARRAS), entry.endswith(KARRAS)
        cls = SAMPLERS.get(name)
        if not cls.supports(process):
            continue
        if cls.adaptive:
            if name == "ggf":
                specs += [RunSpec("fastdiff", name, tol=e, options=ggf_options(e, max(budgets))) for e in ggf_eps_rel]
            else:  # an adaptive sampler without a known tolerance knob: one run with its defaults
                specs.append(RunSpec("fastdiff", name, tol=float("nan")))
            continue
        for b in budgets:
            try:
                get_sampler(name, nfe=b)
            except SamplerError:
                continue
            if not only_variant:
                specs.append(RunSpec("fastdiff", name, budget=b))
            if (variants or only_variant) and karras_variant(cls, process):
                specs.append(RunSpec("fastdiff", name, budget=b, options={"grid": "karras"}, variant=KARRAS_VARIANT))
    return specs
