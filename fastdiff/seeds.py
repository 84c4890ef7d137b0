"""Seed lists and their split across ranks (the rule of EDM's generate.py), shared by sample.py, callbacks and the
Python API. One grammar everywhere: an int (one seed), a string 'A-B' / 'A,B,C' / '0-9,20', or a list of ints."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

MAX_SEEDS = 10_000_000  # a list this long is ~0.4 GB of Python ints; larger requests are typos (0-99999999999)
ALLOWED = "allowed: 'A-B' (inclusive, A <= B), 'A,B,C', a mix like '0-9,20', an int, or a list of distinct ints >= 0"


def _short(spec: object) -> str:
    text = repr(spec)
    return text if len(text) < 60 else text[:57] + "..."


def _ranges(spec: str) -> list[tuple[int, int]]:
    """'0-9,20' -> [(0, 9), (20, 20)] with one-line errors (no list is built yet)."""
    out = []
    for part in spec.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"malformed seed list {_short(spec)} (at {part!r}) — {ALLOWED}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"range {lo}-{hi} in {_short(spec)} ends below its start — write it as {hi}-{lo}")
        out.append((lo, hi))
    return out


def parse_seeds(spec: Any, max_seeds: int = MAX_SEEDS) -> list[int]:
    """An int, 'A-B' / 'A,B,C' / '0-9,20', or an iterable of ints -> the list of distinct non-negative seeds.

    Strings are never iterated character by character; the count is checked before any list is built.
    """
    if isinstance(spec, bool):
        raise ValueError(f"{spec!r} is not a seed list — {ALLOWED}")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"seed {spec} is negative — {ALLOWED}")
        return [spec]
    if isinstance(spec, str):
        ranges = _ranges(spec)
        count = sum(hi - lo + 1 for lo, hi in ranges)
        if count > max_seeds:
            raise ValueError(f"{_short(spec)} names {count} seeds — at most {max_seeds} per run")
        out = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    else:
        if isinstance(spec, range) and len(spec) > max_seeds:
            raise ValueError(f"{_short(spec)} names {len(spec)} seeds — at most {max_seeds} per run")
        try:
            items = list(spec)
        except TypeError:
            raise ValueError(f"{_short(spec)} is not a seed list — {ALLOWED}") from None
        out = []
        for s in items:
            if isinstance(s, bool) or not hasattr(s, "__index__") or int(s) < 0:
                raise ValueError(f"item {s!r} of {_short(spec)} is not an int >= 0 — {ALLOWED}")
            out.append(int(s))
        if len(out) > max_seeds:
            raise ValueError(f"{len(out)} seeds given — at most {max_seeds} per run")
    if not out:
        raise ValueError(f"seeds is empty ({_short(spec)}) — give at least one seed, e.g. '0-63'")
    if len(set(out)) != len(out):
        srt = sorted(out)
        dup = next(a for a, b in zip(srt, srt[1:]) if a == b)
        raise ValueError(f"{_short(spec)} lists seed {dup} more than once — each seed names one sample; list it once")
    return out


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
