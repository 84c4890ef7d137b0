"""Seed lists and their split across ranks (the rule of EDM's generate.py), shared by sample.py and callbacks."""
from __future__ import annotations

import math
import re
from typing import Sequence


def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """'0-49999', '0,5,10-12' or a list of ints -> sorted-as-given list of unique non-negative seeds."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return [spec] if spec >= 0 else _bad(spec)
    if isinstance(spec, str):
        out: list[int] = []
        for part in spec.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                _bad(spec)
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                _bad(spec)
            out.extend(range(lo, hi + 1))
    else:
        try:
            out = [int(s) for s in spec]
        except (TypeError, ValueError):
            _bad(spec)
        if any(s < 0 for s in out) or any(isinstance(s, bool) for s in spec):
            _bad(spec)
    if not out:
        _bad(spec)
    if len(set(out)) != len(out):
        raise ValueError(f"seed list {_short(spec)} contains duplicates; each seed names one sample")
    return out


def _short(spec: object) -> str:
    text = repr(spec)
    return text if len(text) < 60 else text[:57] + "..."


def _bad(spec: object) -> list[int]:
    raise ValueError(f"malformed seeds {_short(spec)}: use 'A-B' (inclusive), 'A,B,C', a mix like '0-9,20', "
                     "or a list of non-negative integers")


def rank_batches(seeds: Sequence[int], batch_size: int, world_size: int, rank: int) -> list[list[int]]:
    """The seed batches rank ``rank`` samples: split into ceil(S / (batch * world)) * world near-equal
    batches and give rank r the batches r, r + world, ... (EDM's rule; some batches may be empty)."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1, world_size >= 1 and 0 <= rank < world_size; got "
                         f"{batch_size}, {world_size}, {rank}")
    seeds = list(seeds)
    n_batches = max(1, math.ceil(len(seeds) / (batch_size * world_size))) * world_size
    # near-equal contiguous chunks (like numpy.array_split)
    q, r = divmod(len(seeds), n_batches)
    bounds = [0]
    for i in range(n_batches):
        bounds.append(bounds[-1] + q + (1 if i < r else 0))
    chunks = [seeds[bounds[i]:bounds[i + 1]] for i in range(n_batches)]
    return chunks[rank::world_size]
