"""Resumable training order: a pure function of (seed, epoch), rank-sharded, that a checkpoint can resume mid-epoch.

:class:`EpochShuffleSampler` is a ``DistributedSampler`` (so Lightning uses it as it is under DDP instead of wrapping
it) whose permutation is seeded by a hash of (seed, epoch) and that can start an epoch after its first items.
:class:`ResumableDataLoader` walks the passes over the data in order and keeps its position (pass, batches used in
it) as ``state_dict``: Lightning's fit loop saves the state of such loaders in the checkpoint
(``loops.fit_loop.state_dict.combined_loader``) and, on resume, loads it before it creates the first iterator.

The loader counts passes itself instead of following Lightning's ``set_epoch``: a checkpoint written after
``fit`` stopped at ``max_steps`` mid-epoch (``trainer.save_checkpoint`` after fit) resumes in Lightning as a *new*
epoch shortened by the batches already done, so Lightning's epoch number would pick the wrong permutation there;
its batch counting, which decides when the epoch ends, agrees with the loader's position in every case.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterator, Sized

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

_M64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed hashed from integers (splitmix64 finaliser applied after mixing in each value)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _M64)) * 0xBF58476D1CE4E5B9 & _M64
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _M64
        h ^= h >> 29
    return h & ((1 << 63) - 1)


def uniform_from_seed(seed: int) -> float:
    """A number in [0, 1) that is a pure function of ``seed`` (53 bits of :func:`mix_seed`)."""
    return (mix_seed(seed) >> 10) / float(1 << 53)


class EpochShuffleSampler(DistributedSampler):
    """Shuffled indices of one rank: randperm seeded by mix_seed(seed, epoch), padded to a multiple of
    ``num_replicas`` by repeating its start, rank r taking items r, r + num_replicas, ... (DistributedSampler layout).

    ``salted``: yield ``(index, item_seed)`` pairs instead of indices, item_seed = mix_seed(seed, epoch, index), so a
    data set wrapper can make per-item random choices (e.g. a flip) that are pure functions too.
    ``skip``: iteration starts after this rank's first ``skip`` items of the epoch (set by :meth:`start`); ``len``
    is always the full epoch.
    """

    def __init__(self, dataset: Sized, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 salted: bool = False) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"shuffle seed must be an int, got {seed!r}")
        if len(dataset) == 0:
            raise ValueError("cannot shuffle an empty data set")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.salted = bool(salted)
        self.skip = 0

    def start(self, epoch: int, skip: int = 0) -> None:
        """The next iteration yields epoch ``epoch`` from this rank's item ``skip`` on."""
        if not 0 <= skip <= self.num_samples:
            raise ValueError(f"skip must be in [0, {self.num_samples}], got {skip}")
        self.epoch, self.skip = int(epoch), int(skip)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's full order of one epoch."""
        n = len(self.dataset)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g).tolist()
        pad = self.total_size - n
        if pad > 0:
            order += (order * math.ceil(pad / n))[:pad]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        order = self.epoch_indices(epoch)[self.skip:]
        if self.salted:
            return iter([(i, mix_seed(self.seed, epoch, i)) for i in order])
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """DataLoader over an :class:`EpochShuffleSampler` (with ``drop_last=True``) that walks pass 0, 1, 2, ... of the
    data; its state is its position (``epoch``: the pass, ``batches``: batches of it yielded so far).

    Each iteration continues from the position to the end of the pass (a pass that was used up starts the next).
    The iteration starts lazily, at the first ``next``: Lightning creates the training iterator before it calls
    ``set_epoch`` (and, on resume, does not create it again), so an eager start with worker processes would fetch
    from a stale order. Counting happens in the main process (worker prefetching does not inflate it), and
    Lightning fetches no batch ahead for loaders with a length, so at a checkpoint the count is the number of batches
    trained on. No ``__init__`` of its own: Lightning may re-create DataLoaders from their constructor arguments.
    """

    def _order(self) -> EpochShuffleSampler | None:
        return self.sampler if isinstance(self.sampler, EpochShuffleSampler) else None

    def _position(self) -> tuple[int, int]:
        return getattr(self, "_epoch", 0), getattr(self, "_batches", 0)

    def __iter__(self) -> Iterator[Any]:
        if self._order() is None:  # sampler replaced (e.g. by Lightning for overfit_batches): no state to keep
            return super().__iter__()
        return self._continue_pass()

    def _continue_pass(self) -> Iterator[Any]:
        sampler = self._order()
        assert sampler is not None and self.batch_size is not None
        epoch, batches = self._position()
        if batches >= len(self):  # the pass is used up: the next one
            epoch, batches = epoch + 1, 0
        self._epoch, self._batches = epoch, batches
        sampler.start(epoch, batches * self.batch_size)
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """{"epoch", "batches", "batch_size", "seed"}: the position and what it assumes."""
        sampler = self._order()
        if sampler is None:
            return {}
        epoch, batches = self._position()
        return {"epoch": epoch, "batches": batches, "batch_size": self.batch_size, "seed": sampler.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved position (warns when batch size or seed differ: the order then differs too)."""
        sampler = self._order()
        if sampler is None or not state_dict:
            return
        if state_dict.get("batch_size") != self.batch_size or state_dict.get("seed") != sampler.seed:
            warnings.warn(f"training order: the checkpoint has batch_size {state_dict.get('batch_size')} and seed "
                          f"{state_dict.get('seed')}, this run {self.batch_size} and {sampler.seed}; the resumed "
                          f"order differs from an uninterrupted run", stacklevel=2)
        self._epoch, self._batches = int(state_dict["epoch"]), int(state_dict["batches"])
