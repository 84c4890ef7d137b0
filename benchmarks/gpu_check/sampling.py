"""Sampling: samples/s at the large batch, the cost of per-seed noise, and batch-size invariance on the device.

Per-seed noise cost: the same sampler, seeds and weights run once with fastdiff's per-seed ``NoiseSource`` (one
generator per sample: one small draw per sample and call) and once with :class:`benchmarks.noise.BatchNoise` (one
generator, one draw per call); cost = (t_per_seed - t_batched) / t_per_seed. The runs alternate (per-seed, batched,
per-seed, batched, ...: ``sample_repeats`` pairs) and each side keeps its fastest, so a one-off stall does not
land on one side.

Batch-size invariance: seeds 0..n-1 drawn inside the batch of B (seeds 0..B-1) and again in batches of b.
Per-seed noise makes the two mathematically identical; the check allows float differences up to 1% of one uint8 step (2/255 in [-1, 1]
units), and reports separately whether the uint8 images (hence their lossless PNGs) are identical.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmarks.gpu_check.settings import SamplerCase, Sizes
from benchmarks.noise import BatchNoise
from fastdiff.samplers.noise import NoiseSource

# 1% of a uint8 quantisation step of images in [-1, 1]: a difference this small moves a pixel to another uint8
# value only if the pixel lies within 1% of a step from a rounding boundary
FLOAT_TOL = 0.01 * 2.0 / 255.0


@dataclass
class SampleRun:
    """The sampling section's numbers for one sampler."""

    config: str
    label: str
    nfe: float
    batch: int
    samples_per_s: float
    noise_cost: float  # fraction of the per-seed sampling time
    max_abs_diff: float  # batch invariance, float
    uint8_diff: int  # pixel values that differ after uint8 conversion
    png_identical: bool
    seconds: float

    @property
    def invariant(self) -> bool:
        return self.max_abs_diff <= FLOAT_TOL and self.png_identical


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8, the rounding image grids and PNG writers use."""
    return ((x.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def png_bytes(img: Tensor) -> bytes:
    """Lossless PNG of uint8 images [N, C, H, W] laid side by side in one row."""
    from PIL import Image

    row = img.permute(2, 0, 3, 1).reshape(img.shape[2], -1, img.shape[1]).numpy()  # H, N*W, C
    buf = io.BytesIO()
    Image.fromarray(row).save(buf, format="PNG")
    return buf.getvalue()


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def sample_case(model: Any, data_shape: tuple[int, ...], case: SamplerCase, sz: Sizes) -> SampleRun:
    """Time one sampler at the large batch (per-seed vs batched noise), then check batch-size invariance."""
    from fastdiff.samplers import get_sampler

    device = torch.device(sz.device)
    sampler = get_sampler(case.sampler, **case.kwargs)
    process, shape = model.process, (sz.sample_batch, *data_shape)
    seeds = list(range(sz.sample_batch))
    start = time.perf_counter()

    def per_seed() -> Any:
        return sampler.sample(model, process, shape, noise=NoiseSource(seeds, device=device), device=device)

    def batched() -> Any:
        return sampler.sample(model, process, shape, noise=BatchNoise(seeds, device=device), device=device)

    full, t_seed = _timed(per_seed, device)
    _, t_batch = _timed(batched, device)
    for _ in range(sz.sample_repeats - 1):
        t_seed = min(t_seed, _timed(per_seed, device)[1])
        t_batch = min(t_batch, _timed(batched, device)[1])
    chunks = []
    for lo in range(0, sz.invariance_n, sz.invariance_batch):
        part = seeds[lo:min(lo + sz.invariance_batch, sz.invariance_n)]
        chunks.append(sampler.sample(model, process, (len(part), *shape[1:]), seeds=part, device=device).x.cpu())
    small = torch.cat(chunks)
    big = full.x[:sz.invariance_n].cpu()
    a, b = to_uint8(big), to_uint8(small)
    return SampleRun(config=case.config, label=case.label, nfe=float(full.nfe), batch=sz.sample_batch,
                     samples_per_s=sz.sample_batch / t_seed, noise_cost=(t_seed - t_batch) / t_seed,
                     max_abs_diff=float((big - small).abs().max()), uint8_diff=int((a != b).sum()),
                     png_identical=png_bytes(a) == png_bytes(b), seconds=time.perf_counter() - start)


def build_model(cfg: dict[str, Any], shape: tuple[int, ...], weights: dict[str, Tensor], device: str) -> Any:
    """The ScoreModel of ``cfg`` with ``weights``, in eval mode, float32, on ``device``."""
    from fastdiff.model import build_score_model

    model = build_score_model(cfg, shape)
    model.load_state_dict(weights)
    return model.to(device).eval()


def sampling_section(cfgs: dict[str, dict[str, Any]], shape: tuple[int, ...], weights: dict[str, dict[str, Tensor]],
                     sz: Sizes, log: Any = print) -> list[SampleRun]:
    """Every sampler case with the weights the training section produced for its config."""
    models = {name: build_model(cfgs[name], shape, w, sz.device) for name, w in weights.items()}
    from fastdiff.samplers import get_sampler

    for model in models.values():  # warm-up: first-call kernel selection and allocator growth stay out of the timing
        get_sampler("edm_euler" if not model.process.augmented else "sps", steps=2).sample(
            model, model.process, (sz.sample_batch, *shape), seeds=range(sz.sample_batch), device=sz.device)
    runs = []
    for case in sz.sampler_cases:
        run = sample_case(models[case.config], shape, case, sz)
        runs.append(run)
        log(f"  sample {case.config:5s} {run.label:32s} nfe {run.nfe:6.1f}  {run.samples_per_s:9.1f} samples/s  "
            f"noise {100 * run.noise_cost:5.1f}%  max|diff| {run.max_abs_diff:.2e}  ({run.seconds:.1f} s)")
    return runs
