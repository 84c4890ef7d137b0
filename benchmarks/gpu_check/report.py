"""The summary table (printed) and the markdown report (summary + detail tables + device and versions)."""
from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch

from benchmarks.gpu_check.sampling import FLOAT_TOL, SampleRun
from benchmarks.gpu_check.train_speed import TrainRun

RATIO_GOAL = 1.05  # Lightning / bare time per image (issue 17)
NOISE_GOAL = 0.05  # per-seed noise cost as a fraction of the sampling time (issue 17)
# step-0 loss of the two loops: same function of the same inputs; only kernel choice / reduction order may
# differ, which moves a bf16-autocast loss by about one bf16 rounding step (2^-8 relative) at most
LOSS_TOL = 2.0**-8


@dataclass
class Row:
    """One line of the summary: what, setting, result, goal, and pass/fail (correctness) or met/missed (speed)."""

    what: str
    setting: str
    result: str
    goal: str
    status: str  # "ok", "FAIL" (a correctness check: exit 1), "met" / "missed" (a speed goal), "" (a figure)


def versions() -> dict[str, str]:
    """Device name and versions of torch, CUDA, the driver and Lightning."""
    import lightning

    out = {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
           "cuda": str(torch.version.cuda), "device": "cpu", "driver": "n/a"}
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name(0)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            out["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else "?"
        except (OSError, subprocess.SubprocessError):
            out["driver"] = "? (nvidia-smi not found)"
    return out


def _mib(x: float) -> str:
    return "n/a" if x != x else f"{x:.0f}"  # NaN: no CUDA allocator on the CPU


def summary_rows(train: list[TrainRun], ddp: dict[str, Any], sample: list[SampleRun],
                 judge_speed: bool = True) -> list[Row]:
    """The summary; speed goals are judged only when ``judge_speed`` (not in the smoke run: CPU timings)."""
    rows: list[Row] = []

    def goal(met: bool) -> str:
        return ("met" if met else "missed") if judge_speed else "n/a (smoke)"

    bare = {(r.config, r.variant): r for r in train if r.loop == "bare"}
    for r in train:
        if r.loop != "lightning":
            continue
        b = bare[(r.config, r.variant)]
        ratio = b.images_per_s / r.images_per_s  # time per image, Lightning over bare
        rows.append(Row("train", f"{r.config} {r.variant}", f"Lightning {r.images_per_s:.0f} img/s, bare "
                        f"{b.images_per_s:.0f} img/s, time ratio {ratio:.3f}, peak memory "
                        + (f"{r.peak_mib:.0f} / {b.peak_mib:.0f} MiB" if r.peak_mib == r.peak_mib else "n/a (CPU)"),
                        f"ratio <= {RATIO_GOAL}", goal(ratio <= RATIO_GOAL)))
        rel = abs(r.first_loss - b.first_loss) / max(abs(b.first_loss), 1e-30)
        rows.append(Row("same work", f"{r.config} {r.variant}", f"step-0 loss {r.first_loss:.6f} vs "
                        f"{b.first_loss:.6f} (rel {rel:.1e})", f"rel <= 2^-8", "ok" if rel <= LOSS_TOL else "FAIL"))
    if ddp:
        rows.append(Row("ddp", f"devices=1, backend {ddp['backend']}",
                        f"3 CLI runs exit {ddp.get('exit_codes')}, step {ddp.get('global_step')}",
                        "all exit 0", "ok" if ddp["ran"] else "FAIL"))
        differs = ", ".join(ddp.get("diffs", [])[:4]) or ddp.get("error", "?")
        rows.append(Row("ddp", "exact resume (last.ckpt, straight vs split)",
                        "identical" if ddp["exact"] else f"differs: {differs}",
                        "bit for bit", "ok" if ddp["exact"] else "FAIL"))
        vals = "; ".join(f"{k} = {', '.join(f'{x:.4g}' for x in v)}" for k, v in ddp.get("eval_values", {}).items())
        rows.append(Row("ddp", "sampling callback", vals or "no metric logged", "finite, every evaluation",
                        "ok" if ddp["eval_ok"] else "FAIL"))
        rows.append(Row("ddp", "final sample grid", "written" if ddp["samples_png"] else "missing", "samples.png",
                        "ok" if ddp["samples_png"] else "FAIL"))
    for s in sample:
        rows.append(Row("sample", f"{s.config} {s.label} batch {s.batch}",
                        f"{s.samples_per_s:.1f} samples/s at NFE {s.nfe:g}", "", ""))
        rows.append(Row("noise", f"{s.config} {s.label}", f"per-seed noise {100 * s.noise_cost:.1f}% of sampling time",
                        f"<= {100 * NOISE_GOAL:.0f}%", goal(s.noise_cost <= NOISE_GOAL)))
        rows.append(Row("invariance", f"{s.config} {s.label}",
                        f"max abs diff {s.max_abs_diff:.1e}, uint8 values differing {s.uint8_diff}, "
                        f"PNG {'identical' if s.png_identical else 'different'}",
                        f"<= {FLOAT_TOL:.1e}, PNG identical", "ok" if s.invariant else "FAIL"))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| check | setting | result | goal | status |", "|---|---|---|---|---|"]
    cell = lambda text: str(text).replace("|", "/")  # noqa: E731  (a pipe would split the markdown cell)
    lines += [f"| {cell(r.what)} | {cell(r.setting)} | {cell(r.result)} | {cell(r.goal)} | {cell(r.status)} |"
              for r in rows]
    return "\n".join(lines)


def train_table(train: list[TrainRun]) -> str:
    lines = ["| config | variant | loop | images/s | peak MiB | step-0 loss | run s (incl. compile) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.config} | {r.variant} | {r.loop} | {r.images_per_s:.1f} | {_mib(r.peak_mib)} | "
              f"{r.first_loss:.6f} | {r.seconds:.1f} |" for r in train]
    return "\n".join(lines)


def sample_table(sample: list[SampleRun]) -> str:
    lines = ["| config | sampler | NFE | batch | samples/s | per-seed noise cost | max abs diff (batch) | "
             "uint8 values differing | PNG identical | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s.config} | {s.label} | {s.nfe:g} | {s.batch} | {s.samples_per_s:.1f} | {100 * s.noise_cost:.1f}% | "
              f"{s.max_abs_diff:.2e} | {s.uint8_diff} | {s.png_identical} | {s.seconds:.1f} |" for s in sample]
    return "\n".join(lines)


def markdown(rows: list[Row], train: list[TrainRun], sample: list[SampleRun], info: dict[str, Any]) -> str:
    """The whole report: header with device and versions, the summary, then the detail tables."""
    v = info["versions"]
    head = [f"# GPU check ({'smoke run, CPU' if info['smoke'] else 'full run'})", "",
            f"Written by `{info['command']}` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
            f"in {info['wall']:.0f} s.", "",
            f"Device: **{v['device']}**; torch {v['torch']}, CUDA {v['cuda']}, driver {v['driver']}, "
            f"Lightning {v['lightning']}, Python {v['python']}.", "",
            f"Training: {info['train_note']}", "", f"Sampling: {info['sample_note']}", ""]
    notes = [f"- {n}" for n in info.get("notes", [])]
    return "\n".join(head + ["## Summary", "", table(rows), "", *(["## Notes", "", *notes, ""] if notes else []),
                             "## Training runs", "", train_table(train), "", "## Sampling runs", "",
                             sample_table(sample), ""])
