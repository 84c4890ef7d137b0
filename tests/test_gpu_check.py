"""benchmarks/gpu_check: the --smoke run end to end (so the GPU script never rots), its refusals, and its checks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_check.__main__ import main
from benchmarks.gpu_check.ddp_resume import compare_checkpoints
from benchmarks.gpu_check.report import summary_rows
from benchmarks.gpu_check.sampling import FLOAT_TOL, SampleRun, png_bytes, to_uint8
from benchmarks.noise import BatchNoise
from benchmarks.gpu_check.settings import RESULTS

REPO = Path(__file__).resolve().parents[1]


def _results_state() -> bytes | None:
    return RESULTS.read_bytes() if RESULTS.is_file() else None


def _rows(md: str) -> list[list[str]]:
    """The summary table's rows as cell lists."""
    body = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("| ") and not line.startswith("| check ")]


def test_smoke_run_passes_every_check_and_leaves_the_committed_results_alone(tmp_path):
    before = _results_state()
    out = tmp_path / "gpu.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _results_state() == before  # the smoke run never writes benchmarks/results/gpu.md
    md = out.read_text()
    assert "Device: **cpu**" in md and "torch " in md and "Lightning " in md
    rows = _rows(md)
    by_what: dict[str, list[list[str]]] = {}
    for r in rows:
        by_what.setdefault(r[0], []).append(r)
    # every config x variant (eager, channels_last) ran both loops, and the loops did the same work
    assert sorted(r[1] for r in by_what["train"]) == ["psld channels_last", "psld eager", "vp channels_last",
                                                      "vp eager"]
    assert [r[4] for r in by_what["same work"]] == ["ok"] * 4
    # ddp devices=1 through the CLI on gloo: all runs exit 0, resume exact, callback metric logged, grid written
    ddp = by_what["ddp"]
    assert len(ddp) == 4 and all(r[4] == "ok" for r in ddp), ddp
    assert "backend gloo" in ddp[0][1]
    # every sampler of the issue ran at the large batch and is batch-size invariant
    samplers = [r[1].split()[1].split("(")[0] for r in by_what["invariance"]]
    assert samplers == ["edm_heun", "dpmpp_2m", "restart", "ggf", "sps"]
    assert all(r[4] == "ok" for r in by_what["invariance"])
    assert len(by_what["noise"]) == 5 and len(by_what["sample"]) == 5
    assert "report: " in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_full_run_without_cuda_fails_with_one_line(capsys):
    before = _results_state()
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no CUDA device is visible — ")
    assert _results_state() == before


@pytest.mark.parametrize("argv,message", [
    (["--smoke", "--steps", "3", "--warmup", "3"],
     "error: --steps 3 and --warmup 3: need warmup >= 1 and steps > warmup"),
    (["--smoke", "--out", "x.txt"], "error: --out x.txt: the report is markdown"),
    (["--smoke", "--out", str(RESULTS)], "the smoke run must not overwrite the committed results"),
    (["--bogus"], "error: unrecognized arguments: --bogus"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_checkpoint_comparison_finds_a_one_ulp_difference(tmp_path):
    w = torch.randn(3, 4)
    base = {"state_dict": {"w": w}, "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(2)}}}],
            "lr_schedulers": [{"last_epoch": 3}], "global_step": 3,
            "callbacks": {"EMA": {"shadow": {"w": w.clone()}, "num_updates": 3}, "ModelCheckpoint{}": {"dirpath": "a"}}}
    other = {**base, "callbacks": {**base["callbacks"], "ModelCheckpoint{}": {"dirpath": "b"}}}  # paths may differ
    torch.save(base, tmp_path / "a.ckpt")
    torch.save(other, tmp_path / "b.ckpt")
    assert compare_checkpoints(str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")) == []
    bumped = w.clone()
    bumped[1, 2] = torch.nextafter(bumped[1, 2], torch.tensor(float("inf")))
    changed = {**base, "callbacks": {**base["callbacks"], "EMA": {"shadow": {"w": bumped}, "num_updates": 3}}}
    torch.save(changed, tmp_path / "c.ckpt")
    assert compare_checkpoints(str(tmp_path / "a.ckpt"), str(tmp_path / "c.ckpt")) == ["callbacks.EMA.shadow.w"]


def test_batched_noise_matches_the_per_seed_interface():
    noise = BatchNoise(range(6), base_seed=1)
    assert noise.randn((2, 3)).shape == (6, 2, 3)
    assert noise.rand((5,), idx=torch.tensor([0, 4])).shape == (2, 5)
    assert noise.randn((4,), dtype=torch.float64).dtype == torch.float64
    # a fresh source with the same base seed repeats its draws (one generator, deterministic)
    first, again = BatchNoise(range(6), base_seed=1), BatchNoise(range(6), base_seed=1)
    assert torch.equal(first.randn((2, 3)), again.randn((2, 3)))


def test_uint8_and_png_see_a_half_step_but_not_a_tiny_difference():
    x = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    assert to_uint8(x).dtype == torch.uint8 and int(to_uint8(x).min()) == 0 and int(to_uint8(x).max()) == 255
    # FLOAT_TOL is 1% of a uint8 step: pixels 5% of a step from a rounding boundary stay put; a full step moves them
    centred = (torch.round((x + 1) * 127.5) / 127.5 - 1).clamp(-1, 1)
    assert png_bytes(to_uint8(centred)) == png_bytes(to_uint8(centred + FLOAT_TOL))
    assert png_bytes(to_uint8(centred)) != png_bytes(to_uint8(centred + 2 / 255))


def test_a_failed_invariance_is_a_failed_check():
    run = SampleRun(config="vp", label="edm_heun", nfe=35, batch=512, samples_per_s=1.0, noise_cost=0.01,
                    max_abs_diff=2 * FLOAT_TOL, uint8_diff=0, png_identical=True, seconds=1.0)
    status = {r.what: r.status for r in summary_rows([], {}, [run])}
    assert status["invariance"] == "FAIL" and status["noise"] == "met"
