"""Collectives that degrade to no-ops in one process (no torch.distributed group, or a world of one).

Every rank must call each of them, in the same order, whenever a process group of several ranks exists.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def dist_on() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """In-place sum (``op="sum"``) or max (``op="max"``) over ranks; returns ``t``."""
    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    if dist_on():
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def gather_ints(values: Sequence[int], device: torch.device) -> list[int]:
    """Every rank's list of ints, concatenated in rank order (lists may differ in length)."""
    local = torch.tensor(list(values), dtype=torch.int64, device=device)
    if not dist_on():
        return local.tolist()
    from torchmetrics.utilities.distributed import gather_all_tensors  # gathers sizes, pads, trims

    return [v for p in gather_all_tensors(local) for v in p.tolist()]


def gather_rows(local: Tensor, world_size: int) -> Tensor:
    """Every rank's equal-length 1-D tensor stacked into [world, k] on the CPU."""
    if world_size == 1 or not dist_on():
        return local.reshape(1, -1).cpu()
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local)
    return torch.stack(parts).cpu()


def gather_lists(values: list[Any], world_size: int) -> list[Any]:
    """Every rank's list (of picklable items) concatenated in rank order."""
    if world_size == 1 or not dist_on():
        return list(values)
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]
