"""Sizes of the two modes: the real check (one CUDA GPU, the DDPM++-size U-Net) and the CPU smoke run (tiny)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {"vp": REPO / "configs" / "cifar10_vp.yaml", "psld": REPO / "configs" / "cifar10_psld.yaml"}
RESULTS = REPO / "benchmarks" / "results" / "gpu.md"

# the smoke run keeps the configs' structure (32x32x3 data, attention at 16x16) with a tiny width and depth
TINY_NET = ["net.channels=8", "net.channel_mult=[1,2]", "net.num_res_blocks=1", "net.attn_resolutions=[16]"]


@dataclass(frozen=True)
class SamplerCase:
    """One sampler run of the sampling section: the config (process) it samples and its get_sampler arguments."""

    config: str
    sampler: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.sampler}({opts})" if opts else self.sampler


@dataclass(frozen=True)
class Sizes:
    """Everything a mode decides; the sections read only this."""

    smoke: bool
    device: str
    net_overrides: list[str]
    train_batch: int
    train_steps: int  # steps per training run (each of 2 configs x variants x 2 loops)
    train_warmup: int  # untimed first steps (torch.compile compiles during the first one)
    variants: dict[str, tuple[tuple[bool, bool], ...]]  # per config: (channels_last, compile) settings
    sample_batch: int
    sample_repeats: int  # timed (per-seed, batched) pairs; each side keeps its fastest
    invariance_batch: int
    invariance_n: int  # the first seeds re-drawn in batches of invariance_batch and compared with the big batch
    sampler_cases: tuple[SamplerCase, ...]
    ddp_images: int  # training images per synthetic CIFAR batch file (5 files)
    ddp_batch: int
    ddp_steps: int  # the straight run; the split run stops at half and resumes
    ddp_eval: dict[str, Any]
    ddp_final_samples: list[str]
    ddp_workers: int


def _cases(smoke: bool) -> tuple[SamplerCase, ...]:
    if smoke:  # the fewest steps each sampler allows, so that every code path runs in seconds
        return (SamplerCase("vp", "edm_heun", {"nfe": 5}), SamplerCase("vp", "dpmpp_2m", {"nfe": 4}),
                SamplerCase("vp", "restart", {"nfe": 11}),
                SamplerCase("vp", "ggf", {"eps_rel": 0.5, "max_nfe": 20}), SamplerCase("psld", "sps", {"nfe": 5}))
    # budgets people run on CIFAR-10: EDM's 35-NFE Heun, DPM-Solver++ at 20, Restart's vp_43 preset, GGF at the
    # loose end of its paper's tolerances (capped: a barely trained net may need many steps), SPS at 50
    return (SamplerCase("vp", "edm_heun", {"nfe": 35}), SamplerCase("vp", "dpmpp_2m", {"nfe": 20}),
            SamplerCase("vp", "restart", {"preset": "vp_43"}),
            SamplerCase("vp", "ggf", {"eps_rel": 0.1, "max_nfe": 400}),
            SamplerCase("psld", "sps", {"nfe": 50}))


GRID = ((False, False), (True, False), (False, True), (True, True))


def sizes(smoke: bool, steps: int | None = None, warmup: int | None = None, full_grid: bool = False) -> Sizes:
    """The sizes of a mode (``steps``/``warmup`` override the training run length; ``full_grid``: every config
    runs the whole channels_last x compile grid)."""
    if smoke:
        base = Sizes(
            smoke=True, device="cpu", net_overrides=TINY_NET, train_batch=4, train_steps=5, train_warmup=2,
            # compile is skipped on the CPU (it needs a C++ toolchain and minutes)
            variants={"vp": ((False, False), (True, False)), "psld": ((False, False), (True, False))},
            sample_batch=4, sample_repeats=1, invariance_batch=2, invariance_n=4, sampler_cases=_cases(True),
            ddp_images=8, ddp_batch=4, ddp_steps=4,
            ddp_eval={"samplers": [{"sampler": "edm_heun", "nfe": 3}], "n_samples": 4, "batch_size": 4,
                      "every_n_steps": 2, "metrics": ["raw_kid"], "ref_samples": 8, "progress": False},
            ddp_final_samples=["final_samples.n=4", "final_samples.nfe=3", "final_samples.sampler=edm_heun"],
            ddp_workers=0)
    else:
        base = Sizes(
            smoke=False, device="cuda", net_overrides=[], train_batch=128, train_steps=150, train_warmup=25,
            # VP: the whole channels_last x compile grid; PSLD: both off and both on. Each compiled setting costs
            # a cold torch.compile of the U-Net (about a minute or more; the second loop hits Inductor's cache),
            # which is what keeps the full run near 8 minutes; --full-grid runs PSLD's whole grid as well
            variants={"vp": GRID, "psld": ((False, False), (True, True))},
            sample_batch=512, sample_repeats=2, invariance_batch=64, invariance_n=128, sampler_cases=_cases(False),
            ddp_images=512, ddp_batch=128, ddp_steps=20,  # 20 batches per epoch: the split at 10 is mid-epoch
            ddp_eval={"samplers": [{"sampler": "edm_heun", "nfe": 9}], "n_samples": 256, "batch_size": 128,
                      "every_n_steps": 10, "metrics": ["raw_kid"], "ref_samples": 512, "progress": False},
            ddp_final_samples=["final_samples.n=64", "final_samples.nfe=9", "final_samples.sampler=edm_heun"],
            ddp_workers=4)
    from dataclasses import replace

    if steps is not None or warmup is not None:
        base = replace(base, train_steps=steps if steps is not None else base.train_steps,
                       train_warmup=warmup if warmup is not None else base.train_warmup)
    if full_grid and not smoke:
        base = replace(base, variants={name: GRID for name in base.variants})
    return base
