"""A batched noise source for quality runs: one generator for the whole batch instead of one per sample."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor

from fastdiff.samplers.noise import NoiseSource


class BatchNoise(NoiseSource):
    """Same interface and distribution as :class:`NoiseSource`, but every draw comes from one generator.

    The per-sample streams of NoiseSource (outputs independent of batching) cost one small ``torch.randn`` per
    sample and draw, which dominates stochastic samplers on cheap oracle scores. Quality numbers do not need the
    per-sample property, so the quality benchmark uses this; the speed benchmark keeps the default streams.
    """

    def __init__(self, seeds: Iterable[int], device: torch.device | str = "cpu", base_seed: int = 0) -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("BatchNoise needs at least one seed")
        self.device = torch.device(device)
        self.generators = []
        self.generator = torch.Generator(self.device).manual_seed(int(base_seed))

    def randn(self, shape: Sequence[int], idx: Sequence[int] | Tensor | None = None,
              dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normals [len(idx), *shape] (float32 draws, then cast, as NoiseSource does)."""
        rows = len(self._rows(idx))
        return torch.randn((rows, *shape), generator=self.generator, device=self.device).to(dtype)

    def rand(self, shape: Sequence[int], idx: Sequence[int] | Tensor | None = None,
             dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform [0, 1) draws [len(idx), *shape]."""
        rows = len(self._rows(idx))
        return torch.rand((rows, *shape), generator=self.generator, device=self.device).to(dtype)
