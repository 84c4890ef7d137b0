"""What an evaluation shows in TensorBoard besides scalars: the metric-vs-NFE figure, 2-D scatter plots and the
custom-scalars layout (one chart per metric, one line per sampler@budget)."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

from fastdiff.evaluation.evaluator import RunResult


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (training machines have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def custom_scalars_layout(name: str, metric_names: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard custom-scalars layout: category ``name``, one multiline chart per metric (and for NFE and
    samples/s) whose regex matches every ``<name>/<metric>/<label>/<budget>`` tag, so each sampler@budget is a line."""
    charts = {m: ["Multiline", [rf"^{re.escape(name)}/{re.escape(m)}/.*"]]
              for m in [*metric_names, "nfe", "samples_per_s"]}
    return {name: charts}


def y_scale(values: Sequence[float]) -> tuple[str, dict[str, Any]]:
    """("log", {}) when every finite value is positive; else ("symlog", {linthresh}) so negative KID estimates and
    values spanning decades (fd 41.8 beside 1-2) stay readable; ("linear", {}) without finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "linear", {}
    if all(v > 0 for v in finite):
        return "log", {}
    nonzero = [abs(v) for v in finite if v != 0]
    return "symlog", {"linthresh": min(nonzero) if nonzero else 1.0}


def metric_figure(results: Sequence[RunResult], metric_names: Sequence[str], title: str = "") -> Any:
    """Panels of metric vs measured NFE per sample (log x; log or symlog y), one line per sampler label, two
    panels per row (about 1000 px wide at 100 dpi), the legend in a spare panel or under the first one."""
    plt = pyplot()
    k = len(metric_names)
    ncol = min(k, 2)
    nrow = math.ceil(k / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.0 * ncol, 3.4 * nrow), squeeze=False)
    flat = list(axes.flat)
    labels = list(dict.fromkeys(r.label for r in results))
    for ax, metric in zip(flat, metric_names):
        for label in labels:
            pts = sorted((r.nfe, r.values[metric]) for r in results if r.label == label)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        scale, kw = y_scale([r.values[metric] for r in results])
        ax.set_yscale(scale, **kw)
        ax.set_xlabel("NFE per sample")
        ax.set_title(metric, fontsize=11)
        ax.grid(alpha=0.3, which="both")
    handles, names = flat[0].get_legend_handles_labels()
    if len(flat) > k:  # a spare panel holds the legend
        for ax in flat[k:]:
            ax.axis("off")
        flat[k].legend(handles, names, loc="center", fontsize=10, frameon=False)
    else:
        flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def scatter_figure(points: Any, title: str) -> Any:
    """A 2-D scatter plot of samples [N, 2]."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=3, alpha=0.6)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    return fig
