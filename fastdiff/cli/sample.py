"""``python sample.py ckpt=PATH sampler=NAME nfe=N seeds=0-49999 out=DIR [...]``: large-scale generation with
Lightning predict (DDP on CPU/gloo or GPU/nccl), each sample written under its seed, resumable, optional FID.

Seeds are split as in EDM's generate.py (``fastdiff.seeds.rank_batches``); per-seed noise makes every sample
independent of its batch, so on CPU the files are bit-identical whatever the number of processes or the batch size
(tested). On GPU the kernels picked for different batch sizes may differ in the last bits (float32 shards), which
the uint8 PNG quantisation almost always hides. With num_nodes > 1, ``out`` must be a shared file system.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from fastdiff.cli import run_cli
from fastdiff.config import ConfigError, merge, parse_overrides
from fastdiff.schema import FIDConfig, SampleConfig, SampleTrainerConfig, check_dataclass, check_devices
from fastdiff.schema.preflight import check_writable_dir

USAGE = ("usage: python sample.py ckpt=PATH sampler=NAME nfe=N seeds=0-49999 out=DIR [batch=64] [ema=true] "
         "[progress=true] [options.KEY=VALUE ...] [trainer.devices=K trainer.num_nodes=M trainer.accelerator=auto "
         "trainer.strategy=auto] [fid.ref=STATS.npz fid.options.KEY=VALUE]")
RAW_KEYS = ("ckpt", "out", "sampler", "seeds", "fid.ref")  # taken verbatim (paths are not parsed as YAML)
GENERATION_FILE = "generation.json"
SUMMARY_FILE = "summary.json"


class SampleError(ConfigError):
    """A problem with the request, found before sampling starts; the message is one line."""


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``key=value`` arguments -> validated dict; every check that needs no torch runs here (names, types, ranges,
    the seed list's grammar and size, the checkpoint and reference files exist, out is writable)."""
    args: dict[str, Any] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if item.startswith("-") or not sep or not key:
            raise SampleError(f"{item}: not a key=value argument — e.g. nfe=35; {USAGE}")
        if key in RAW_KEYS and not (key == "seeds" and value.lstrip().startswith("[")):
            layer = _nested(key, value)
        else:
            layer = parse_overrides([item])[0]
        args = merge(args, layer)
    return _validate(args)


def _validate(args: dict[str, Any]) -> dict[str, Any]:
    from fastdiff.seeds import parse_seeds

    out = check_dataclass("", args, SampleConfig, " (sampler options go in options.KEY=VALUE)")
    out["trainer"] = check_dataclass("trainer", out["trainer"], SampleTrainerConfig)
    check_devices("trainer.devices", out["trainer"]["devices"])
    out["fid"] = check_dataclass("fid", out["fid"], FIDConfig)
    if out["nfe"] is not None and out["steps"] is not None:
        raise SampleError(f"steps: given with nfe={out['nfe']} — give nfe or steps, not both")
    try:
        out["seed_list"] = parse_seeds(out["seeds"])
    except ValueError as err:
        raise SampleError(f"seeds: {err}") from None
    if not os.path.exists(out["ckpt"]):
        raise SampleError(f"ckpt: checkpoint not found: {out['ckpt']} — give the path of a .ckpt written by train.py")
    ref = out["fid"]["ref"]
    if ref is None and out["fid"]["options"]:
        raise SampleError("fid.options: given without fid.ref — add fid.ref=STATS.npz or drop the options")
    if ref is not None and not os.path.isfile(ref):
        raise SampleError(f"fid.ref: reference statistics {ref} not found — make them with python -m "
                          "fastdiff.cli.stats")
    check_writable_dir("out", out["out"])
    return out


# ---- checks before starting -----------------------------------------------------------------------------------
def make_out_dir(out: str) -> bool:
    """Create ``out`` (checked writable by parse_args) and prove it by writing a probe; True if it was created."""
    from fastdiff.lightning.callbacks.writer import TMP_MARK

    path = Path(out)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe{TMP_MARK}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SampleError(f"out: cannot write to {path} ({err.strerror or err}) — give a writable directory") from None
    return created


def build_sampler(args: dict[str, Any]) -> Any:
    """The sampler from sampler/nfe/steps/options (its own one-line errors: unknown name, budget, options)."""
    from fastdiff.registry import SAMPLERS, UnknownNameError
    from fastdiff.samplers import get_sampler  # importing the package registers the samplers

    name = args["sampler"]
    try:
        cls = SAMPLERS.get(name)
    except UnknownNameError:
        raise SampleError(f"sampler: unknown sampler {name!r} — registered: {', '.join(SAMPLERS.names())}") from None
    if not cls.adaptive and args["nfe"] is None and args["steps"] is None:
        raise SampleError(f"nfe: required for sampler {name!r} — give nfe=N (or steps=S)")
    try:
        return get_sampler(name, nfe=args["nfe"], steps=args["steps"], **args["options"])
    except (TypeError, ValueError) as err:
        raise SampleError(str(err).strip().splitlines()[0]) from None


def load_model(ckpt: str, ema: bool) -> tuple[Any, dict[str, Any]]:
    """(ScoreModel with EMA or raw weights, the checkpoint's hyperparameters {config, data_shape})."""
    from fastdiff.lightning.checkpoint import load_score_model

    try:
        model = load_score_model(ckpt, use_ema=ema)  # reads the file once; the model carries config and data shape
        return model, {"config": model.config, "data_shape": list(model.data_shape)}
    except (OSError, ValueError, TypeError, KeyError) as err:  # FileNotFoundError, CheckpointError, bad config
        raise SampleError(f"ckpt: {str(err).strip().splitlines()[0]}") from None


def fid_request(args: dict[str, Any], model_config: dict[str, Any], data_shape: tuple[int, ...]) -> Any:
    """The FID request when fid.ref is given (the stats file is read and checked now, before sampling)."""
    from fastdiff.lightning.generate import FIDRequest
    from fastdiff.metrics.stats import load_stats

    ref = args["fid"]["ref"]
    if ref is None:
        if args["fid"]["options"]:
            raise SampleError("fid.options: given without fid.ref=STATS.npz")
        return None
    try:
        stats = load_stats(ref)
        request = FIDRequest(ref=ref, extractor_id=stats.extractor, data_shape=data_shape,
                             data=model_config.get("data"), options=dict(args["fid"]["options"]))
        request.check()
    except (OSError, ValueError) as err:
        raise SampleError(f"fid.ref: {str(err).strip().splitlines()[0]}") from None
    return request


def generation_identity(model: Any, sampler: Any, data_shape: tuple[int, ...], fmt: str) -> dict[str, Any]:
    """What makes two runs produce the same files: the weights used, the sampler, the data shape and format."""
    from fastdiff.metrics.features import tensor_sha256

    return {"weights_sha256": tensor_sha256(model.state_dict()), "sampler": sampler.config(),
            "data_shape": list(data_shape), "format": fmt}


def check_generation(out: Path, identity: dict[str, Any], write: bool = True) -> None:
    """Refuse to resume into a directory filled by a different model/sampler; record the identity otherwise."""
    from fastdiff.lightning.callbacks.writer import atomic_write

    path = out / GENERATION_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            diff = _differences(old, identity) or ("settings differ" if old != identity else "")
            if diff:
                raise SampleError(f"out: {out} holds samples of a different generation ({diff}) — use a new out "
                                  f"directory or delete {out}")
            return
    if not write:
        return
    text = json.dumps(identity, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """'key: A there, B now' for the first differing (nested) key, or '' when equal."""
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            inner = _differences(before, value, f"{prefix}{key}.")
            if inner:
                return inner
        elif before != value:
            return f"{prefix}{key}: {before!r} there, {value!r} now"
    return ""


# ---- running --------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Everything checked and built before Lightning starts."""

    args: dict[str, Any]
    seeds: list[int]
    model: Any
    sampler: Any
    data_shape: tuple[int, ...]
    store: Any
    fid: Any
    created: bool = False  # out did not exist before this run (removed again if the run fails before a sample)


def plan(args: dict[str, Any]) -> Plan:
    """Run every check that can fail (cheapest first), then create out and record the generation identity last,
    so a refused request leaves nothing behind."""
    from fastdiff.lightning.callbacks.writer import SampleStore
    from fastdiff.schema.preflight import check_hardware

    check_hardware("trainer", args["trainer"])
    sampler = build_sampler(args)
    model, hparams = load_model(args["ckpt"], args["ema"])
    if not sampler.supports(model.process):
        from fastdiff.registry import PROCESSES
        from fastdiff.samplers.base import cls_supports

        ok = [n for n in PROCESSES.names() if cls_supports(type(sampler), PROCESSES.get(n))]
        raise SampleError(f"sampler: sampler {sampler.name!r} does not support process "
                          f"{type(model.process).__name__} — it supports: {', '.join(ok)}")
    data_shape = tuple(int(s) for s in hparams["data_shape"])
    store = SampleStore(Path(args["out"]), data_shape)
    fid = fid_request(args, hparams["config"], data_shape)
    if store.out_dir.is_dir():
        try:
            store.finished(args["seed_list"])  # every existing shard must be readable before we start
        except ValueError as err:
            raise SampleError(f"out: {str(err).strip().splitlines()[0]}") from None
    identity = generation_identity(model, sampler, data_shape, store.format)
    check_generation(store.out_dir, identity, write=False)
    created = make_out_dir(args["out"])
    check_generation(store.out_dir, identity)
    return Plan(args=args, seeds=args["seed_list"], model=model, sampler=sampler, data_shape=data_shape,
                store=store, fid=fid, created=created)


def run(p: Plan) -> dict[str, Any]:
    """Lightning predict over every rank's seed batches; returns the summary (rank 0 also writes summary.json)."""
    import lightning.pytorch as pl

    from fastdiff.lightning.callbacks.writer import SampleWriter, atomic_write
    from fastdiff.lightning.generate import GenerateModule

    from fastdiff.lightning.callbacks.progress import StepProgressBar
    from fastdiff.lightning.callbacks.threads import ThreadPolicy

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    tc = p.args["trainer"]
    writer = SampleWriter(p.store, p.fid)
    module = GenerateModule(p.model, p.sampler, p.seeds, p.args["batch"], p.store)
    callbacks = [writer, ThreadPolicy(), *([StepProgressBar()] if p.args["progress"] else [])]
    trainer = pl.Trainer(accelerator=tc["accelerator"], devices=tc["devices"], num_nodes=tc["num_nodes"],
                         strategy=tc["strategy"], precision="32-true", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=p.args["progress"], inference_mode=False,
                         use_distributed_sampler=False, callbacks=callbacks, default_root_dir=str(p.store.out_dir))
    trainer.predict(module, return_predictions=False)
    summary = {**writer.totals, "out": str(p.store.out_dir), "format": p.store.format, "seeds": p.args["seeds"],
               "batch": p.args["batch"], "checkpoint": os.path.abspath(p.args["ckpt"]), "ema": p.args["ema"],
               "sampler": p.sampler.config(), "is_global_zero": trainer.is_global_zero}
    if trainer.is_global_zero:
        text = json.dumps({k: v for k, v in summary.items() if k != "is_global_zero"}, indent=1)
        atomic_write(p.store.out_dir / SUMMARY_FILE, lambda tmp: Path(tmp).write_text(text))
    return summary


def summary_line(s: dict[str, Any]) -> str:
    """One line: samples, NFE per sample (mean/max), samples/s, FID (if asked), failures."""
    parts = [f"{s['samples']} samples ({s['generated']} generated, {s['skipped']} already there)"]
    if s["generated"]:
        parts.append(f"NFE/sample mean {s['nfe_mean']:.4g} max {s['nfe_max']}")
        parts.append(f"{s['samples_per_s']:.4g} samples/s on {s['world_size']} process(es)")
    if "fid" in s:
        f = s["fid"]
        parts.append(f"{f['metric']} {f['value']:.6g}" if f["value"] is not None else f"{f['metric']} n/a")
    if s["failed"]:
        parts.append(f"{s['failed']} seed(s) FAILED (NaN/inf): {s['failed_seeds'][:10]}")
    return "sample: " + " | ".join(parts) + f" | {os.path.join(s['out'], SUMMARY_FILE)}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python sample.py``; exit code 2 for bad requests, 1 if some seeds failed."""
    return run_cli(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    from fastdiff.cli.console import pop_verbose, start_job

    verbose, argv = pop_verbose(argv)
    p = plan(parse_args(argv))
    start_job(verbose)
    try:
        summary = run(p)
    except BaseException:
        _undo_start(p)
        raise
    if summary["is_global_zero"]:
        print(summary_line(summary), flush=True)
    return 1 if summary["failed"] else 0


def _undo_start(p: Plan) -> None:
    """A run that failed before writing any sample leaves no generation.json and no directory it created."""
    out = p.store.out_dir
    if not out.is_dir() or p.store.shard_files() or any(d.is_dir() for d in out.iterdir()):
        return
    (out / GENERATION_FILE).unlink(missing_ok=True)
    if p.created and not any(out.iterdir()):
        out.rmdir()
