"""One-call sampling: ``fastdiff.sample(model_or_checkpoint, sampler=..., nfe=..., seeds=...)`` (no Lightning import)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from .samplers import NoiseSource, SampleResult, Sampler, SamplerError, get_sampler

if TYPE_CHECKING:
    from .model import ScoreModel


def _load(path: str | os.PathLike[str], device: torch.device) -> tuple["ScoreModel", tuple[int, ...]]:
    """ScoreModel and per-sample data shape from a fastdiff checkpoint (safe ``weights_only`` loading)."""
    from .lightning.checkpoint import load_score_model  # no Lightning import

    model = load_score_model(path, map_location=device)  # reads the file once; the model carries its data shape
    return model, tuple(model.data_shape)


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def sample(model_or_checkpoint: "ScoreModel | str | os.PathLike[str]", sampler: str | Sampler = "edm_heun",
           nfe: int | None = 35, seeds: int | str | Iterable[int] = range(64), batch_size: int = 256,
           device: torch.device | str | None = None, shape: Sequence[int] | None = None,
           **options: Any) -> SampleResult:
    """Sample a ScoreModel (or a checkpoint path) in batches of ``batch_size`` seeds; results concatenated in seed order.

    ``seeds``: an int (one seed), a string like "0-63" or "0,5,10-12", or an iterable of distinct ints >= 0.
    ``sampler`` is a registered name (built with ``nfe`` and ``**options``; give ``steps=`` in the options
    instead of ``nfe`` to fix the step count) or a ready Sampler. ``shape`` is one sample's data shape; it is
    read from the checkpoint or the model's ``data_shape`` when those carry it. The model is moved to
    ``device`` (default: where its parameters are) and put in eval mode for the call.
    """
    from .seeds import parse_seeds  # the grammar of sample.py and the config: 10, "0-63", "0,5,9", [1, 2]

    try:
        seeds = parse_seeds(seeds)
    except ValueError as err:
        raise ValueError(f"sample(): seeds: {err}") from None
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"sample(): batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        model, ckpt_shape = _load(model_or_checkpoint, torch.device(device or "cpu"))
        if shape is not None and tuple(int(s) for s in shape) != ckpt_shape:
            raise ValueError(f"sample(): shape={tuple(shape)} does not match the checkpoint's data shape {ckpt_shape}")
        shape = ckpt_shape
    else:
        model = model_or_checkpoint
        if not hasattr(model, "process") or not callable(model):
            raise TypeError(f"sample(): expected a ScoreModel (with .process) or a checkpoint path, "
                            f"got {type(model).__name__}")
        shape = shape if shape is not None else getattr(model, "data_shape", None)
        if shape is None:
            raise ValueError("sample(): this model does not record its data shape; pass shape=(d,) or (C, H, W)")
    shape = tuple(int(s) for s in shape)
    if isinstance(sampler, Sampler):
        if options:
            raise ValueError(f"sample(): options {sorted(options)} given with a ready Sampler; set them when building it")
        smp = sampler
    elif isinstance(sampler, str):
        smp = get_sampler(sampler, nfe=None if "steps" in options else nfe, **options)
    else:
        raise TypeError(f"sample(): sampler must be a registered name or a Sampler, got {type(sampler).__name__}")
    is_module = isinstance(model, torch.nn.Module)
    dev = torch.device(device) if device is not None else (_model_device(model) if is_module else torch.device("cpu"))
    was_training = bool(getattr(model, "training", False))
    if is_module:
        model.to(dev).eval()
    try:
        results = []
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start:start + batch_size]
            noise = NoiseSource(chunk, device=dev)
            results.append(smp.sample(model, model.process, (len(chunk), *shape), noise=noise, device=dev))
    finally:
        if is_module and was_training:
            model.train()
    return _concat(results, seeds)


def _concat(results: list[SampleResult], seeds: list[int]) -> SampleResult:
    """Join per-batch results (tensors moved to CPU) into one SampleResult."""
    counts = torch.cat([r.nfe_per_sample for r in results])
    nfe: float = int(counts[0]) if bool((counts == counts[0]).all()) else float(counts.double().mean())
    info: dict[str, Any] = {"batches": len(results)}
    if any(r.info for r in results):
        info["batch_info"] = [r.info for r in results]
    return SampleResult(x=torch.cat([r.x.cpu() for r in results]), state=torch.cat([r.state.cpu() for r in results]),
                        nfe=nfe, calls=sum(r.calls for r in results), nfe_per_sample=counts, seeds=seeds, info=info)


__all__ = ["sample", "SamplerError"]
