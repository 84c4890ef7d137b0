"""Markdown for the quality benchmark: per cell (problem x NFE budget) our best vs the peers' best, called won or
lost only beyond 2 SE; then every run's signed log-likelihood gap and the deterministic runs' pathwise errors."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks import meta
from benchmarks.instrument import compare, compare_paths
from benchmarks.peers import MISSING

if TYPE_CHECKING:
    from benchmarks.quality import QualityConfig, QualityResult, Row

LOW_NFE = 20  # the issue's frontier: cells at NFE <= 20


def bucket(nfe: float | None, budgets: tuple[int, ...]) -> int | None:
    """The smallest budget that ``nfe`` fits in (None: over the largest, or no NFE)."""
    if nfe is None or not math.isfinite(nfe):
        return None
    return next((b for b in budgets if nfe <= b + 1e-9), None)


def fmt(v: float | None, spec: str = ".3g") -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, spec)


def best(rows: list["Row"], family: str, budget: int, budgets: tuple[int, ...]) -> "Row | None":
    """The ok run of a family in the ``budget`` column with the smallest |gap| (fd_digits: smallest value)."""
    ok = [r for r in rows if r.family == family and r.status == "ok" and r.gap is not None
          and bucket(r.nfe, budgets) == budget]
    return min(ok, key=lambda r: abs(r.gap)) if ok else None  # type: ignore[arg-type]


def duel(ours: "Row", peer: "Row", res: "QualityResult") -> tuple[float, float]:
    """D = |ours| - |peer| and its SE: the larger of the paired SE (over samples, mixtures only) and the
    independent-samples SE sqrt(SE_ours^2 + SE_peer^2).

    The paired SE alone goes to ~0 for two codebases running the same algorithm (dpmpp_2m vs k:dpmpp_2m differ by
    float round-off), which would call a 1e-3 nat difference won or lost; the independent-samples SE is the one
    the issue's "one SE ≈ 0.13" refers to, and the max keeps a verdict conservative under either view."""
    d = abs(ours.gap) - abs(peer.gap)  # type: ignore[arg-type]
    se = math.hypot(ours.gap_se or 0.0, peer.gap_se or 0.0)
    inst = res.instruments.get(ours.problem)
    if inst is not None and ours.metrics is not None and peer.metrics is not None:
        se = max(se, compare(ours.metrics, peer.metrics, inst.ref_var, inst.m)[1])
    return d, se


def verdict(d: float, se: float) -> str:
    """'won' (ours smaller beyond 2 SE), 'lost' (larger beyond 2 SE), else 'tie'."""
    if d < -2 * se:
        return "won"
    return "lost" if d > 2 * se else "tie"


def path_duel(rows: list["Row"], o: "Row", q: "Row", budget: int, budgets: tuple[int, ...]
              ) -> "tuple[Row, Row, float, float] | None":
    """The tie-break of a cell whose gaps tie: among the deterministic runs that are as good on the gap (|gap| within
    2 SE of the cell's best), each family's most accurate solve; D = path_ours - path_peer and its paired SE.

    The gap cannot rank converged samplers (all sit within its SE of 0); the pathwise error to the converged solve
    from the same prior draws can, with an SE orders of magnitude smaller. Restricting it to runs that tie on the
    gap keeps a solver that is close to the reference path but far off in distribution from winning on it.
    None when a family has no such run."""
    top = o if abs(o.gap) <= abs(q.gap) else q  # type: ignore[arg-type]

    def candidates(family: str) -> list["Row"]:
        return [r for r in rows if r.family == family and r.status == "ok" and r.deterministic
                and r.path_sq is not None and r.gap is not None and bucket(r.nfe, budgets) == budget
                and abs(r.gap) - abs(top.gap) <= 2 * math.hypot(r.gap_se or 0.0, top.gap_se or 0.0)]  # type: ignore

    co, cq = candidates("fastdiff"), candidates("peer")
    if not co or not cq:
        return None
    po, pq = min(co, key=lambda r: r.path), min(cq, key=lambda r: r.path)  # type: ignore[arg-type, return-value]
    d, se = compare_paths(po.path_sq, pq.path_sq)  # type: ignore[arg-type]
    return po, pq, d, se


def path_verdict(d: float, se: float, ref_error: float | None) -> str:
    """Like :func:`verdict`, with the reference solve's own error added to the margin twice (it can move each RMS
    by at most that much, by the triangle inequality)."""
    return verdict(d, se + (ref_error if ref_error is not None and math.isfinite(ref_error) else 0.0))


def cell(r: "Row | None") -> str:
    if r is None:
        return "—"
    extra = f", disp {fmt(r.disp, '.2f')}, w-err {fmt(r.wtv, '.3f')}" if r.disp is not None else ""
    extra += f", path {fmt(r.path, '.1e')}" if r.path is not None else ""
    return f"{fmt(r.gap, '+.3f')} ± {fmt(r.gap_se, '.3f')} `{r.label}`{extra}"


def headline(res: "QualityResult") -> tuple[list[str], list[str], dict[str, int]]:
    """One table per problem (rows: NFE budgets); the losses; won/tie/lost counts overall and at NFE <= 20."""
    lines, losses = [], []
    counts = {k: 0 for k in ("won", "tie", "lost", "won_low", "tie_low", "lost_low", "by_path")}
    summary = ["| problem | won | tie | lost | won at NFE ≤ 20 | cells at NFE ≤ 20 |", "|---|---|---|---|---|---|"]
    for p in res.problems:
        rows = [r for r in res.rows if r.problem == p.key]
        budgets = res.budgets[p.key]
        metric = "gap" if p.mixture is not None else "fd_digits"
        table = [f"#### `{p.key}` — {p.title}", "",
                 f"| NFE | ours: best {metric} ± SE | peers: best {metric} ± SE | D = \\|ours\\| − \\|peer\\| ± SE "
                 "| tie-break: pathwise error of the gap-tied deterministic runs, ours vs peers (D ± SE) | verdict |",
                 "|---|---|---|---|---|---|"]
        mine = {k: 0 for k in ("won", "tie", "lost", "won_low", "low")}
        for b in budgets:
            o, q = best(rows, "fastdiff", b, budgets), best(rows, "peer", b, budgets)
            if o is None or q is None:
                table.append(f"| {b} | {cell(o)} | {cell(q)} | | | |")
                continue
            d, se = duel(o, q, res)
            v, how, tie_break = verdict(d, se), "", ""
            pd = path_duel(rows, o, q, b, budgets) if v == "tie" else None
            if pd is not None:
                po, pq, dp, sep = pd
                tie_break = f"{po.path:.2e} `{po.label}` vs {pq.path:.2e} `{pq.label}` ({dp:+.1e} ± {sep:.1e})"
                vp = path_verdict(dp, sep, res.ref_error.get(p.key))
                if vp != "tie":
                    v, how = vp, " (path)"
                    counts["by_path"] += 1
            counts[v] += 1
            mine[v] += 1
            if b <= LOW_NFE:
                counts[v + "_low"] += 1
                mine["low"] += 1
                mine["won_low"] += v == "won"
            table.append(f"| {b} | {cell(o)} | {cell(q)} | {d:+.3f} ± {se:.3f} | {tie_break} | **{v}{how}** |")
            if v == "lost":
                losses.append(f"- `{p.key}` NFE {b}: ours {fmt(o.gap, '+.3f')} ({o.label}) vs peers "
                              f"{fmt(q.gap, '+.3f')} ({q.label}); D = {d:+.3f} ± {se:.3f}"
                              + (f"; on the tie-break {tie_break}" if how else ""))
        lines += table + [""]
        summary.append(f"| `{p.key}` | {mine['won']} | {mine['tie']} | {mine['lost']} | {mine['won_low']} "
                       f"| {mine['low']} |")
    return summary + [""] + lines, losses, counts


def run_table(rows: list["Row"], budgets: tuple[int, ...], value: str, spec: str) -> list[str]:
    """Every sampler (rows) x budget (columns) of one quantity; adaptive runs sit in their NFE's column (@NFE)."""
    lines = ["| sampler | " + " | ".join(str(b) for b in budgets) + " | s |", "|---|" + "---|" * (len(budgets) + 1)]
    for family in ("fastdiff", "peer"):
        for label in dict.fromkeys(r.label for r in rows if r.family == family):
            mine = [r for r in rows if r.family == family and r.label == label]
            if value == "path" and not any(r.deterministic for r in mine):
                continue
            cells = {b: "" for b in budgets}
            for r in mine:
                b = r.budget if r.budget is not None else bucket(r.nfe, budgets)
                if b is None or b not in cells:
                    continue
                text = fmt(getattr(r, value), spec) if r.status == "ok" else r.status.split(":")[0].split(" (")[0]
                cells[b] = text + (f" @{r.nfe:.0f}" if r.budget is None and r.nfe is not None else "")
            name = label if family == "fastdiff" else f"*{label}*"
            lines.append(f"| {name} | " + " | ".join(cells[b] for b in budgets)
                         + f" | {sum(r.seconds for r in mine):.0f} |")
    return lines + [""]


def nfe_check(rows: list["Row"]) -> str:
    """Counted NFE (score wrapper) vs the sampler's own counter and its declared accounting."""
    ran = [r for r in rows if r.nfe is not None and r.status == "ok"]
    bad_counter = [r for r in ran if r.nfe_sampler is not None and abs(r.nfe - r.nfe_sampler) > 1e-9]
    declared = [r for r in ran if r.nfe_declared is not None]
    bad_declared = [r for r in declared if abs(r.nfe - r.nfe_declared) > 1e-9]  # type: ignore[operator]
    text = (f"NFE accounting: {len(ran)} completed runs; the benchmark's score wrapper agrees with the sampler's own "
            f"counter in {len(ran) - len(bad_counter)} and with the declared NFE (fastdiff `sampler.nfe`, the peers' "
            f"step formula / `info['nfe']`) in {len(declared) - len(bad_declared)} of {len(declared)} runs that "
            "declare one (adaptive fastdiff samplers and torchsde declare none).")
    shown = bad_counter + bad_declared
    if shown:
        text += " Mismatches: " + "; ".join(f"{r.problem} {r.label} budget {r.budget}: counted {r.nfe:g}, "
                                            f"sampler {r.nfe_sampler}, declared {r.nfe_declared}" for r in shown[:10])
    return text


def total_time(res: "QualityResult") -> str:
    """The run time line: summed over problems, and the wall clock of a parallel run."""
    line = f"Total run time: {res.seconds / 60:.1f} min summed over problems"
    if res.wall_seconds is not None:
        line += f"; wall clock {res.wall_seconds / 60:.1f} min (problems split over worker processes, `--jobs`)"
    return line + "."


def quality_markdown(res: "QualityResult", cfg: "QualityConfig", commands: str | list[str]) -> str:
    """The full benchmarks/results/quality.md."""
    peers_line = (f"Peers: {MISSING} — missing: {', '.join(res.missing_peers)}." if res.missing_peers else
                  "Peers, on the same score functions. VE/VP (through the EDM view): k-diffusion (euler, heun, dpm_2, "
                  "lms, dpmpp_2m, dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde on Karras grids, dpm_adaptive) and diffusers "
                  "(UniPC bh1/bh2, DPM-Solver++ multistep 2/3, DEIS 2/3; Karras sigmas). PSLD (no EDM view): torchsde "
                  "fixed-step reverse-SDE solvers (euler, reversible_heun, midpoint, srk) and torchdiffeq fixed-grid "
                  "probability-flow solvers (euler, midpoint, rk4, explicit_adams with max_order 4) on uniform, "
                  "quadratic, log-SNR and Karras time grids (`benchmarks/peers_psld.py`). All processes: torchsde's "
                  "adaptive srk (`sdeint(method='srk', adaptive=True)`)." if cfg.peers
                  else "Peers: skipped (--no-peers).")
    commands = [commands] if isinstance(commands, str) else commands
    lines = meta.header("Quality per NFE", commands[0], [
        *([f"Assembled (`--assemble`) from the parts of: " + "; ".join(f"`{c}`" for c in commands), ""]
          if len(commands) > 1 else []),
        f"Setup: n = {cfg.n} samples per run (the same prior draws for every run of a problem); NFE budgets "
        f"{', '.join(map(str, cfg.budgets))} (toy2d networks up to {cfg.trained_max_nfe}; digits networks up to "
        f"{cfg.digits_max_nfe} with n = {min(cfg.n, cfg.n_digits)}: a U-Net call costs ~100x an oracle's); fixed-step samplers run "
        "at the largest step count whose NFE fits, adaptive ones sit in the smallest column their measured NFE fits. "
        "Every registered fastdiff sampler with default options; the EDM-view ones whose default grid is not Karras "
        "also on the Karras grid (`NAME@karras`), as the peers run on Karras grids and (diffusers) their default "
        "schedule.", "",
        "Primary metric on the mixtures (exact density p): the signed log-likelihood gap "
        "E_exact[log p] − mean log p(samples) (> 0 blurred, < 0 over-sharp) ± its empirical SE, with a reference "
        f"of {cfg.n_ref} exact samples (`benchmarks/instrument.py`). Alongside: dispersion ratio (samples assigned to "
        "their most probable component; sqrt of the mean squared Mahalanobis distance over the reference's, "
        "weighted geometric mean over modes) and mode-weight error (total variation of the assignment "
        "frequencies). Cells compare |gap|; won/lost only beyond 2 SE. Deterministic samplers: "
        f"pathwise RMS error to a reference solve (edm_heun at NFE {cfg.ref_nfe} on VE/VP, exp_ode at 1.5 x that "
        "on PSLD) from the same prior draws. SE of a cell's D: the larger of the paired and the "
        "independent-samples SE. Trained digits: fd_digits ± bootstrap SE. SW1/MMD² are in "
        "quality.csv.", "", peers_line, "", total_time(res), ""])
    head, losses, counts = headline(res)
    lines += ["### Headline: our best vs the peers' best per cell", "",
              f"All cells: won {counts['won']}, tie {counts['tie']}, lost {counts['lost']}; at NFE ≤ {LOW_NFE}: won "
              f"{counts['won_low']}, tie {counts['tie_low']}, lost {counts['lost_low']}; of the decided cells, "
              f"{counts['by_path']} were decided by the pathwise tie-break. Best = smallest |gap| in the "
              "column (a selection among many of ours vs fewer peers favours us slightly near zero). A cell is won "
              "or lost on the gap beyond 2 SE; where the gaps tie, the deterministic runs of each side that tie on "
              "the gap are compared on their pathwise error to the reference solve, beyond 2 SE plus twice the "
              "reference's own error (`benchmarks/tables.py`: `path_duel`).", ""] + head
    lines += ["### Where we lose (beyond 2 SE)", ""] + (losses or ["- nowhere"]) + [""]
    lines += ["### NFE accounting", "", nfe_check(res.rows), ""]
    lines += ["### All runs", ""]
    for p in res.problems:
        rows = [r for r in res.rows if r.problem == p.key]
        what = "signed log-likelihood gap" if p.mixture is not None else "fd_digits"
        lines += [f"#### `{p.key}`: {what} (*italic*: peers; last column: seconds)", ""]
        if p.note:
            lines += [p.note[0].upper() + p.note[1:] + ".", ""]
        lines += run_table(rows, res.budgets[p.key], "gap", "+.3f")
        if any(r.path is not None for r in rows):
            lines += [f"Pathwise RMS error to the reference solve (its own error ≈ "
                      f"{fmt(res.ref_error.get(p.key), '.1e')}, the difference to half its NFE):", ""]
            lines += run_table(rows, res.budgets[p.key], "path", ".2e")
    return "\n".join(lines) + "\n"
