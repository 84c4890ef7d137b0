"""Per-sample noise streams: one generator per sample seed (as in EDM), so outputs never depend on batching."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor


class NoiseSource:
    """One ``torch.Generator`` per sample seed; every random draw of a sampler goes through here.

    Draws are made per sample in float32 (then cast), so sample k's stream depends only on its seed and on
    the sequence of draws made for it, never on the batch it is in or on the state dtype.
    """

    def __init__(self, seeds: Iterable[int], device: torch.device | str = "cpu") -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("NoiseSource needs at least one seed")
        bad = [s for s in self.seeds if s < 0 or s >= 2**63]
        if bad:
            raise ValueError(f"seeds must be integers in [0, 2**63), got {bad[:5]}")
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def _rows(self, idx: Sequence[int] | Tensor | None) -> list[int]:
        if idx is None:
            return list(range(len(self.seeds)))
        if isinstance(idx, Tensor):
            idx = idx.tolist()
        return [int(i) for i in idx]

    def randn(self, shape: Sequence[int], idx: Sequence[int] | Tensor | None = None,
              dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normals [len(idx), *shape], row r drawn from sample idx[r]'s generator."""
        rows = self._rows(idx)
        if not rows:
            return torch.empty((0, *shape), device=self.device, dtype=dtype)
        # each row filled in place from its own generator: the same draws as torch.randn(shape, generator=g)
        # (randn is normal_ on a fresh tensor) without a tensor per sample and the stack (the cost at batch 1024)
        out = torch.empty((len(rows), *shape), device=self.device)
        for row, i in zip(out, rows):
            row.normal_(generator=self.generators[i])
        return out.to(dtype)

    def rand(self, shape: Sequence[int], idx: Sequence[int] | Tensor | None = None,
             dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform [0, 1) draws, per sample like :meth:`randn`."""
        rows = self._rows(idx)
        if not rows:
            return torch.empty((0, *shape), device=self.device, dtype=dtype)
        return torch.stack([torch.rand(tuple(shape), generator=self.generators[i], device=self.device) for i in rows]).to(dtype)

    def randn_like(self, z: Tensor, idx: Sequence[int] | Tensor | None = None) -> Tensor:
        """Standard normals shaped like z (z's rows are the samples idx, default all)."""
        return self.randn(z.shape[1:], idx, dtype=z.dtype).to(z.device)
