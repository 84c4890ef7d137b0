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

from fastdiff.config import ConfigError, check_value, merge, parse_overrides, validate_section

USAGE = ("usage: python sample.py ckpt=PATH sampler=NAME nfe=N seeds=0-49999 out=DIR [batch=64] [ema=true] "
         "[progress=true] [options.KEY=VALUE ...] [trainer.devices=K trainer.num_nodes=M trainer.accelerator=auto "
         "trainer.strategy=auto] [fid.ref=STATS.npz fid.options.KEY=VALUE]")
RAW_KEYS = ("ckpt", "out", "sampler", "seeds", "fid.ref")  # taken verbatim (paths are not parsed as YAML)
GENERATION_FILE = "generation.json"
SUMMARY_FILE = "summary.json"


class SampleError(ValueError):
    """A problem with the request, found before sampling starts; the message is one line."""


@dataclass
class TrainerArgs:
    """Lightning Trainer options for prediction (DDP: strategy=ddp with devices > 1 or num_nodes > 1)."""

    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = 1
    num_nodes: int = 1
    strategy: str = "auto"


@dataclass
class FIDArgs:
    """Reference statistics (.npz from ``python -m fastdiff.cli.stats``) and feature-extractor options."""

    ref: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


TOP: dict[str, Any] = {"ckpt": str, "sampler": str, "nfe": int | None, "steps": int | None,
                       "seeds": Union[str, int, list[int]], "out": str, "batch": int, "ema": bool, "progress": bool,
                       "options": dict[str, Any], "trainer": dict, "fid": dict}
DEFAULTS: dict[str, Any] = {"nfe": None, "steps": None, "batch": 64, "ema": True, "progress": True, "options": {},
                            "trainer": {}, "fid": {}}
REQUIRED = ("ckpt", "sampler", "seeds", "out")


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``key=value`` arguments -> validated dict (unknown keys, wrong types and missing keys are one-line errors)."""
    args: dict[str, Any] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if item.startswith("-") or not sep or not key:
            raise SampleError(f"{item}: arguments must look like key=value (e.g. nfe=35); {USAGE}")
        if key in RAW_KEYS and not (key == "seeds" and value.lstrip().startswith("[")):
            layer = _nested(key, value)
        else:
            try:
                layer = parse_overrides([item])[0]
            except ConfigError as err:
                raise SampleError(str(err)) from None
        args = merge(args, layer)
    try:
        return _validate(args)
    except ConfigError as err:
        raise SampleError(str(err)) from None


def _validate(args: dict[str, Any]) -> dict[str, Any]:
    for key in args:
        if key not in TOP:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(TOP)} "
                              "(sampler options go in options.KEY=VALUE)")
    for key in REQUIRED:
        if key not in args:
            raise ConfigError(f"{key}: required; {USAGE}")
    out = {**DEFAULTS, **args}
    for key, hint in TOP.items():
        out[key] = check_value(key, out[key], hint)
    if out["batch"] < 1:
        raise ConfigError(f"batch: must be >= 1, got {out['batch']}")
    out["trainer"] = validate_section("trainer", out["trainer"], TrainerArgs)
    out["fid"] = validate_section("fid", out["fid"], FIDArgs)
    return out


# ---- checks before starting -----------------------------------------------------------------------------------
def check_out_dir(out: str) -> Path:
    """Create ``out`` if needed and prove it is writable (one-line error otherwise)."""
    from fastdiff.lightning.callbacks.writer import TMP_MARK

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SampleError(f"out: {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe{TMP_MARK}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SampleError(f"out: cannot write to {path} ({err.strerror or err})") from None
    return path


def build_sampler(args: dict[str, Any]) -> Any:
    """The sampler from sampler/nfe/steps/options (its own one-line errors: unknown name, budget, options)."""
    from fastdiff.registry import SAMPLERS, UnknownNameError
    from fastdiff.samplers import get_sampler  # importing the package registers the samplers

    name = args["sampler"]
    try:
        cls = SAMPLERS.get(name)
    except UnknownNameError as err:
        raise SampleError(f"sampler: {err}") from None
    if not cls.adaptive and args["nfe"] is None and args["steps"] is None:
        raise SampleError(f"nfe: required for sampler {name!r} (or give steps=S)")
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
    except (OSError, ValueError) as err:  # FileNotFoundError, CheckpointError
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


def check_generation(out: Path, identity: dict[str, Any]) -> None:
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
                raise SampleError(f"out: {out} holds samples of a different generation ({diff}); use a new out "
                                  f"directory or delete {out}")
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


def plan(args: dict[str, Any]) -> Plan:
    """Run every check that can fail (cheapest first) and build model, sampler, store and FID request."""
    from fastdiff.lightning.callbacks.writer import SampleStore
    from fastdiff.samplers import SamplerError
    from fastdiff.seeds import parse_seeds

    try:
        seeds = parse_seeds(args["seeds"])
    except ValueError as err:
        raise SampleError(f"seeds: {err}") from None
    sampler = build_sampler(args)
    model, hparams = load_model(args["ckpt"], args["ema"])
    try:
        sampler.check_process(model.process)
    except SamplerError as err:
        raise SampleError(f"sampler: {err}") from None
    data_shape = tuple(int(s) for s in hparams["data_shape"])
    out = check_out_dir(args["out"])
    store = SampleStore(out, data_shape)
    fid = fid_request(args, hparams["config"], data_shape)
    check_generation(out, generation_identity(model, sampler, data_shape, store.format))
    return Plan(args=args, seeds=seeds, model=model, sampler=sampler, data_shape=data_shape, store=store, fid=fid)


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
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    from fastdiff.cli.console import pop_verbose, start_job

    verbose, argv = pop_verbose(argv)
    try:
        p = plan(parse_args(argv))
        start_job(verbose)
        summary = run(p)
    except SampleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary["is_global_zero"]:
        print(summary_line(summary), flush=True)
    return 1 if summary["failed"] else 0
