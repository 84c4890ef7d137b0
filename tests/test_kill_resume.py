"""kill -9 during sample.py, then a rerun: the sample set is byte-identical to an uninterrupted run, with no
missing, duplicated or temporary files (samples are written to a temporary name and moved into place)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TOY = ["data.name=toy2d", "data.n=200", "data.batch_size=16", "net.name=mlp", "net.hidden=16", "net.depth=1",
       "net.emb_dim=8", "final_samples.n=0", "evaluation=[]"]


def _checkpoint(path: Path) -> str:
    from fastdiff.config import load_config
    from fastdiff.lightning.module import DiffusionModule

    module = DiffusionModule(load_config(None, TOY), (2,))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return str(path)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != "summary.json"}


@pytest.mark.slow
def test_kill_9_during_sampling_then_rerun_gives_identical_files(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.ckpt")
    args = [f"ckpt={ckpt}", "sampler=euler_maruyama", "nfe=50", "seeds=0-799", "batch=8", "ema=false",
            "progress=false", "trainer.accelerator=cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run = [sys.executable, str(ROOT / "sample.py")]
    assert subprocess.run(run + args + [f"out={straight}"], env=env, capture_output=True, timeout=600).returncode == 0
    proc = subprocess.Popen(run + args + [f"out={killed}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(killed.glob("shard_*.npz"))) < 5 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(killed.glob("shard_*.npz")))
    assert 0 < n_before < 100, n_before  # killed part-way (100 shards of 8 seeds in all)
    assert subprocess.run(run + args + [f"out={killed}"], env=env, capture_output=True, timeout=600).returncode == 0
    a, b = _files(straight), _files(killed)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]
