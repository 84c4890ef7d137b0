"""PNG plots of the quality benchmark: SW1 vs NFE per problem, one figure per scenario (small files)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.quality import QualityResult


def plot_quality(res: "QualityResult", budgets: tuple[int, ...], out_dir: Path) -> list[Path]:
    """quality_<scenario>.png: one panel per problem, a line per sampler (peers dashed), the noise floor shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt

    paths = []
    for scenario in dict.fromkeys(p.scenario for p in res.problems):
        probs = [p for p in res.problems if p.scenario == scenario]
        cols = min(3, len(probs))
        nrows = (len(probs) + cols - 1) // cols
        height = 3.0 * nrows + 0.8
        fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, height), squeeze=False)
        handles: dict[str, object] = {}
        cmap = plt.get_cmap("tab20")  # 20 colours; ours solid, peers dashed
        labels = list(dict.fromkeys(r.method for r in res.rows if r.problem in {p.key for p in probs}))
        for ax, p in zip(axes.flat, probs):
            rows = [r for r in res.rows if r.problem == p.key and r.status == "ok" and r.sw is not None]
            for i, method in enumerate(labels):
                pts = sorted((r.nfe, r.sw) for r in rows if r.method == method)
                if not pts:
                    continue
                peer = any(r.family == "peer" for r in rows if r.method == method)
                (h,) = ax.plot([a for a, _ in pts], [b for _, b in pts], ls="--" if peer else "-", lw=1.2,
                               marker="o" if method in {"ggf", "k:dpm_adaptive", "torchsde:srk"} else None, ms=3,
                               color=cmap(labels.index(method) % 20))
                handles.setdefault(method, h)
            fl = res.floors[p.key]
            ax.axhspan(max(fl.sw - fl.sw_std, 1e-6), fl.sw + fl.sw_std, color="0.85", zorder=0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(min(budgets) * 0.8, max(budgets) * 1.25)
            ax.set_ylim(0.3 * fl.sw, max(0.5, 8 * fl.sw))  # runs far off (diverged at low NFE) leave the top
            ax.set_title(p.key, fontsize=9)
            ax.set_xlabel("NFE", fontsize=8)
            ax.set_ylabel("SW1", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for ax in list(axes.flat)[len(probs):]:
            ax.axis("off")
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=8, fontsize=7, frameon=False)
        fig.suptitle(f"{scenario} score: SW1 to exact samples vs NFE "
                     "(grey: noise floor ± std; dashed: peers; y clipped)", fontsize=10)
        fig.tight_layout(rect=(0, 0.65 / height, 1, 1 - 0.3 / height))
        path = out_dir / f"quality_{scenario}.png"
        fig.savefig(path, dpi=72)
        plt.close(fig)
        paths.append(path)
    return paths
