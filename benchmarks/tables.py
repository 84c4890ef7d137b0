"""Markdown for the quality benchmark: headline (our best vs the peers' best per NFE), losses, per-problem tables."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks import meta
from benchmarks.peers import MISSING

if TYPE_CHECKING:
    from benchmarks.quality import Floor, QualityConfig, QualityResult, Row


def bucket(nfe: float | None, budgets: tuple[int, ...]) -> int | None:
    """The smallest budget that ``nfe`` fits in (None: over the largest, or no NFE)."""
    if nfe is None or not math.isfinite(nfe):
        return None
    return next((b for b in budgets if nfe <= b + 1e-9), None)


def fmt(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3g}"


def best(rows: list["Row"], family: str, budget: int, budgets: tuple[int, ...]) -> "Row | None":
    """Lowest-SW ok run of a family whose NFE falls in the ``budget`` column."""
    ok = [r for r in rows if r.family == family and r.status == "ok" and r.sw is not None
          and bucket(r.nfe, budgets) == budget]
    return min(ok, key=lambda r: r.sw) if ok else None  # type: ignore[arg-type, return-value]


def verdict(ours: "Row | None", peer: "Row | None", floor: "Floor") -> str:
    """'<' ours lower (better), '>' ours worse, '≈' within 2 sqrt(2) floor std or both at the floor."""
    if ours is None or peer is None:
        return ""
    tol = 2 * math.sqrt(2) * floor.sw_std
    at_floor = floor.sw + 2 * floor.sw_std
    if abs(ours.sw - peer.sw) <= tol or (ours.sw <= at_floor and peer.sw <= at_floor):  # type: ignore[operator]
        return "≈"
    return "<" if ours.sw < peer.sw else ">"  # type: ignore[operator]


def headline(res: "QualityResult") -> tuple[list[str], list[str], list[str]]:
    """Per scenario: rows = problems, columns = NFE budgets, cells 'ours (sampler) v peers (sampler)'; the losses
    beyond the noise tolerance; and the cells where the peers are nominally ahead within it."""
    lines, losses, nominal = [], [], []
    for scenario in dict.fromkeys(p.scenario for p in res.problems):
        probs = [p for p in res.problems if p.scenario == scenario]
        budgets = res.budgets[probs[0].key]
        counts = {"<": 0, "≈": 0, ">": 0}
        table = ["| problem | floor | " + " | ".join(f"NFE ≤ {b}" for b in budgets) + " |",
                 "|---|---|" + "---|" * len(budgets)]
        for p in probs:
            rows = [r for r in res.rows if r.problem == p.key]
            fl = res.floors[p.key]
            cells = []
            for b in budgets:
                o, q = best(rows, "fastdiff", b, budgets), best(rows, "peer", b, budgets)
                v = verdict(o, q, fl)
                ours = f"{fmt(o.sw)} {o.label}" if o else "—"
                peer = f"{fmt(q.sw)} {q.label}" if q else "—"
                cells.append(f"{ours} **{v}** {peer}" if v else f"{ours} / {peer}")
                if v:
                    counts[v] += 1
                if o is None or q is None:
                    continue
                where = f"`{p.key}` NFE ≤ {b}: ours {fmt(o.sw)} ({o.label}) vs peers {fmt(q.sw)} ({q.label})"
                if v == ">":
                    losses.append(f"- {where}; floor {fmt(fl.sw)} ± {fmt(fl.sw_std)}")
                elif v == "≈" and q.sw < 0.99 * o.sw:  # type: ignore[operator]
                    nominal.append(where)
            table.append(f"| `{p.key}` | {fmt(fl.sw)} | " + " | ".join(cells) + " |")
        lines += [f"**{scenario} score** — cell: our best SW1 (sampler) `<`/`≈`/`>` the peers' best (sampler). "
                  f"Cells with both: ours lower {counts['<']}, tie {counts['≈']}, ours higher {counts['>']}.", ""]
        lines += table + [""]
    return lines, losses, nominal


def problem_table(key: str, title: str, note: str, rows: list["Row"], floor: "Floor",
                  budgets: tuple[int, ...]) -> list[str]:
    """All runs of one problem: SW1 per NFE column (adaptive runs: value @ measured NFE); bold = column best."""
    lines = [f"#### {title} (`{key}`)", "",
             f"Noise floor (n exact samples): SW1 {fmt(floor.sw)} ± {fmt(floor.sw_std)}, "
             f"MMD² {fmt(floor.mmd)} ± {fmt(floor.mmd_std)}." + (f" {note[0].upper()}{note[1:]}." if note else ""),
             "",
             "| sampler | " + " | ".join(str(b) for b in budgets) + " | s |", "|---|" + "---|" * (len(budgets) + 1)]
    col_best = {b: min((r.sw for r in rows if r.status == "ok" and r.sw is not None and bucket(r.nfe, budgets) == b),
                       default=None) for b in budgets}
    capped = False
    for family in ("fastdiff", "peer"):
        labels = list(dict.fromkeys(r.label for r in rows if r.family == family))
        for label in labels:
            mine = [r for r in rows if r.family == family and r.label == label]
            cells = {b: "" for b in budgets}
            for r in mine:
                b = r.budget if r.budget is not None else bucket(r.nfe, budgets)
                if b is None:
                    continue
                if r.status != "ok":
                    text = r.status.split(":")[0].split(" (")[0]
                else:
                    text = fmt(r.sw)
                    if r.sw == col_best[b]:
                        text = f"**{text}**"
                if r.budget is None:
                    text += f" @{r.nfe:.0f}" if r.nfe is not None else ""
                if r.note:
                    text += "†"
                    capped = True
                cells[b] = text
            over = [r for r in mine if r.budget is None and bucket(r.nfe, budgets) is None and r.nfe is not None]
            extra = "".join(f" (over: {fmt(r.sw)} @{r.nfe:.0f})" for r in over)
            name = f"{label}{extra}" if family == "fastdiff" else f"*{label}*{extra}"
            lines.append(f"| {name} | " + " | ".join(cells[b] for b in budgets)
                         + f" | {sum(r.seconds for r in mine):.0f} |")
    if capped:
        lines += ["", "† some samples reached max_nfe (= the largest budget) before t_eps and were denoised "
                  "where they stood (how many: the note column of quality.csv)."]
    return lines + [""]


def nfe_check(rows: list["Row"]) -> str:
    """Counted NFE (score wrapper) vs the sampler's own counter and its declared accounting."""
    ran = [r for r in rows if r.nfe is not None and r.status == "ok"]
    bad_counter = [r for r in ran if r.nfe_sampler is not None and abs(r.nfe - r.nfe_sampler) > 1e-9]
    declared = [r for r in ran if r.nfe_declared is not None]
    bad_declared = [r for r in declared if abs(r.nfe - r.nfe_declared) > 1e-9]  # type: ignore[operator]
    text = (f"NFE accounting: {len(ran)} completed runs; the benchmark's score wrapper agrees with the sampler's own "
            f"counter in {len(ran) - len(bad_counter)} and with the declared NFE (fastdiff `sampler.nfe`, k-diffusion "
            f"formula / `info['nfe']`) in {len(declared) - len(bad_declared)} of {len(declared)} runs that declare one "
            "(adaptive fastdiff samplers and torchsde declare none).")
    shown = bad_counter + bad_declared
    if shown:
        text += " Mismatches: " + "; ".join(f"{r.problem} {r.label} budget {r.budget}: counted {r.nfe:g}, "
                                            f"sampler {r.nfe_sampler}, declared {r.nfe_declared}" for r in shown[:10])
    return text


def quality_markdown(res: "QualityResult", cfg: "QualityConfig", command: str, pngs: list[str]) -> str:
    """The full benchmarks/results/quality.md."""
    peers_line = (f"Peers: {MISSING} — missing: {', '.join(res.missing_peers)}." if res.missing_peers else
                  "Peers: k-diffusion (euler, heun, dpmpp_2m, dpmpp_sde, dpm_adaptive; EDM view, VE/VP only) and "
                  "torchsde (`sdeint(method='srk', adaptive=True)` on the reverse SDE, every process) on the same "
                  "score functions." if cfg.peers else "Peers: skipped (--no-peers).")
    lines = meta.header("Quality per NFE", command, [
        f"Setup: n = {cfg.n} samples per run; NFE budgets {', '.join(map(str, cfg.budgets))} (trained networks: "
        f"up to {cfg.trained_max_nfe}, as a network call costs ~10x the oracle's here); fixed-step samplers "
        "run at the largest step count whose NFE fits the budget, adaptive ones (tolerance sweeps) sit in the "
        "smallest column their measured NFE fits (`@NFE`). Every registered fastdiff sampler with default options. "
        "Metric: sliced Wasserstein-1 (256 random directions, `fastdiff.metrics.toy.sliced_wasserstein` with p = 1) "
        "to a fixed reference set of 10000 exact samples (float32 differences); MMD² (`mmd_rbf`, first 500 samples "
        "against 500 reference samples) is in quality.csv. Noise floor: the same metric for independent sets of "
        "n exact samples (mean ± std of 5): a perfect sampler scores there. Random draws: one batched generator "
        "per run, the same "
        "seed for every run of a problem (`benchmarks.noise.BatchNoise`).", "", peers_line, "",
        f"Total run time: {res.seconds / 60:.1f} min.", ""])
    head, losses, nominal = headline(res)
    lines += ["### Headline: our best vs the peers' best per NFE", "",
              "`<`: ours lower (better); `>`: ours worse; `≈`: within 2√2 floor std, or both at the floor. "
              "Best = lowest SW1 among the runs in the column (many of ours vs fewer peers: a small selection bias "
              "in our favour near the floor).", ""] + head
    lines += ["### Where we lose", "", "Beyond the noise tolerance:", ""]
    lines += (losses or ["- nowhere"]) + [""]
    if nominal:
        lines += ["Within the noise tolerance, the peers' best is nominally lower at: " + "; ".join(nominal) + ".", ""]
    lines += ["### NFE accounting", "", nfe_check(res.rows), ""]
    if pngs:
        lines += ["### Plots", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    lines += ["### All runs (SW1; bold: column best; *italic*: peers; last column: seconds)", ""]
    for p in res.problems:
        lines += problem_table(p.key, p.title, p.note, [r for r in res.rows if r.problem == p.key],
                               res.floors[p.key], res.budgets[p.key])
    return "\n".join(lines) + "\n"
