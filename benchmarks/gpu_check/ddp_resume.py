"""strategy=ddp, devices=1 end to end through the real training CLI (fastdiff.cli.train.main, what train.py runs).

Data: synthetic files in the exact CIFAR-10 python-batch format (data_batch_1..5 + test_batch, random uint8
pixels), so the run goes through configs/cifar10_vp.yaml's own data path (the safe pickle loader, the resumable
shuffled loader with pinned memory) with no change to the library. One child process runs the CLI three times:
straight to N steps, then N/2 steps and a resume (``trainer.ckpt_path=last``) to N. The two last.ckpt files must
be equal bit for bit (weights, EMA shadow, Adam state, scheduler, step); ``trainer.deterministic=true`` makes the
kernels deterministic (Lightning sets CUBLAS_WORKSPACE_CONFIG; we set it before CUDA starts). The run also logs
a sampling-callback metric (raw_kid of an edm_heun run) and draws the final sample grid on the device.

Child usage (the parent builds the arguments): ``python -m benchmarks.gpu_check.ddp_resume SPEC.json OUT.json``.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_check.settings import CONFIGS, REPO, Sizes


def write_synthetic_cifar(root: Path, per_file: int, n_test: int, seed: int = 0) -> Path:
    """cifar-10-batches-py with random uint8 images: 5 training files of ``per_file`` images and a test file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = [(f"data_batch_{i}", per_file) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def cli_args(spec: dict[str, Any], out_dir: str, max_steps: int, resume: bool) -> list[str]:
    """train.py arguments of one run of the check."""
    args = ["--config", str(CONFIGS["vp"]), f"data.root={spec['root']}", f"data.batch_size={spec['batch']}",
            f"data.num_workers={spec['workers']}", f"trainer.accelerator={spec['accelerator']}", "trainer.devices=1",
            "trainer.strategy=ddp", "trainer.deterministic=true", f"trainer.max_steps={max_steps}",
            f"trainer.checkpoint_every_n_steps={spec['steps'] // 2}", "trainer.log_every_n_steps=1",
            "trainer.limit_val_batches=2", f"out_dir={out_dir}", f"evaluation=[{json.dumps(spec['eval'])}]",
            *spec["final_samples"], *spec["net"]]
    return args + (["trainer.ckpt_path=last"] if resume else [])


def _scalars(out_dir: str, prefix: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for event_file in sorted((Path(out_dir) / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(prefix):
                found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def compare_checkpoints(a: str, b: str) -> list[str]:
    """Names of the entries that differ between two Lightning checkpoints (tensors bit for bit)."""
    import torch

    ca = torch.load(a, map_location="cpu", weights_only=True)
    cb = torch.load(b, map_location="cpu", weights_only=True)
    diffs: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            same = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape \
                and x.dtype == y.dtype and torch.equal(x, y)
            if not same:
                diffs.append(where)
        elif isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k), y.get(k), f"{where}.{k}")
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif x != y:
            diffs.append(where)

    for key in ("state_dict", "optimizer_states", "lr_schedulers", "global_step"):
        walk(ca.get(key), cb.get(key), key)
    # of the callbacks only the EMA state is training state (ModelCheckpoint's holds this run's paths)
    walk(ca.get("callbacks", {}).get("EMA"), cb.get("callbacks", {}).get("EMA"), "callbacks.EMA")
    if ca.get("callbacks", {}).get("EMA") is None:
        diffs.append("callbacks.EMA (missing)")
    return diffs


def child(spec_path: str, out_path: str) -> int:
    """Run the three CLI invocations in this process and write what they showed as JSON."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from fastdiff.cli.train import main

    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    straight, split = str(work / "straight"), str(work / "split")
    n, half = spec["steps"], spec["steps"] // 2
    codes = [main(cli_args(spec, straight, n, False)), main(cli_args(spec, split, half, False)),
             main(cli_args(spec, split, n, True))]
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
    result: dict[str, Any] = {"exit_codes": codes, "backend": backend}
    if codes == [0, 0, 0]:
        last = [str(Path(d) / "checkpoints" / "last.ckpt") for d in (straight, split)]
        result["diffs"] = compare_checkpoints(*last)
        result["global_step"] = int(torch.load(last[0], map_location="cpu", weights_only=True)["global_step"])
        metrics = _scalars(straight, f"{spec['eval'].get('name', 'val')}/")
        result["eval_values"] = {tag: [v for _, v in pts] for tag, pts in metrics.items()
                                 if tag.split("/")[1] in spec["eval"]["metrics"]}
        result["samples_png"] = all((Path(d) / "samples.png").is_file() for d in (straight, split))
    Path(out_path).write_text(json.dumps(result))
    return 0


def start_ddp(sz: Sizes, work: Path) -> tuple[subprocess.Popen, Path]:
    """Write the synthetic data and start the child (the CLI runs); :func:`finish_ddp` waits for it."""
    root = work / "data"
    write_synthetic_cifar(root, sz.ddp_images, max(sz.ddp_batch * 2, sz.ddp_eval["ref_samples"]))
    spec = {"work": str(work), "root": str(root), "batch": sz.ddp_batch, "workers": sz.ddp_workers,
            "accelerator": "gpu" if sz.device == "cuda" else "cpu", "steps": sz.ddp_steps, "eval": sz.ddp_eval,
            "final_samples": sz.ddp_final_samples, "net": sz.net_overrides}
    spec_path, out_path = work / "spec.json", work / "result.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    env.pop("LOCAL_RANK", None)  # a fresh launch, not a rank of some outer job
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_check.ddp_resume", str(spec_path), str(out_path)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out_path


def finish_ddp(started: tuple[subprocess.Popen, Path], sz: Sizes, log: Any = print) -> dict[str, Any]:
    """Wait for the child and summarise: {ran, exact, backend, eval_ok, samples_png, ...}."""
    proc, out_path = started
    stdout, stderr = proc.communicate()
    if proc.returncode != 0 or not out_path.is_file():
        tail = (stderr or stdout).strip().splitlines()[-20:]
        log("  ddp child failed:\n    " + "\n    ".join(tail))
        return {"ran": False, "exact": False, "backend": "?", "eval_ok": False, "samples_png": False,
                "error": tail[-1] if tail else f"exit {proc.returncode}"}
    res = json.loads(out_path.read_text())
    ok_codes = res["exit_codes"] == [0, 0, 0]
    evals = res.get("eval_values", {})
    expected_evals = sz.ddp_steps // sz.ddp_eval["every_n_steps"]
    eval_ok = bool(evals) and all(len(v) == expected_evals and all(math.isfinite(x) for x in v)
                                  for v in evals.values())
    summary = {"ran": ok_codes, "exact": ok_codes and res.get("diffs") == [], "backend": res["backend"],
               "diffs": res.get("diffs", []), "global_step": res.get("global_step"), "eval_ok": eval_ok,
               "eval_values": evals, "samples_png": bool(res.get("samples_png")), "exit_codes": res["exit_codes"]}
    log(f"  ddp backend={summary['backend']} exact_resume={summary['exact']} eval={evals} "
        f"samples_png={summary['samples_png']}")
    return summary


if __name__ == "__main__":
    sys.exit(child(sys.argv[1], sys.argv[2]))
