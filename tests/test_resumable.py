"""Resumable training order: (seed, epoch) -> order, rank shards, loader position and its state, flips, data module."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DistributedSampler

from fastdiff.data import DiffusionDataModule
from fastdiff.data.datamodule import RandomHFlip
from fastdiff.data.resumable import EpochShuffleSampler, ResumableDataLoader, mix_seed, uniform_from_seed

DATA = torch.arange(50, dtype=torch.float32).unsqueeze(1)  # item i is the tensor [i]


def _loader(seed: int = 3, batch_size: int = 8, **kwargs) -> ResumableDataLoader:
    return ResumableDataLoader(DATA, batch_size=batch_size, sampler=EpochShuffleSampler(DATA, seed=seed),
                               drop_last=True, **kwargs)


def _items(batches) -> list[int]:
    return [int(v) for b in batches for v in b.flatten()]


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    s = EpochShuffleSampler(DATA, seed=5)
    e0, e1 = s.epoch_indices(0), s.epoch_indices(1)
    assert sorted(e0) == sorted(e1) == list(range(50)) and e0 != e1
    assert EpochShuffleSampler(DATA, seed=5).epoch_indices(1) == e1  # a fresh sampler: same order
    assert EpochShuffleSampler(DATA, seed=6).epoch_indices(0) != e0
    # not seed + epoch as in torch's DistributedSampler: (seed 5, epoch 1) and (seed 6, epoch 0) differ
    assert EpochShuffleSampler(DATA, seed=6).epoch_indices(0) != EpochShuffleSampler(DATA, seed=5).epoch_indices(1)
    torch.manual_seed(123)  # the global RNG plays no part
    s.set_epoch(1)
    assert list(s) == e1
    s.start(1, skip=7)
    assert list(s) == e1[7:] and len(s) == 50
    assert len({mix_seed(a, b) for a in range(20) for b in range(20)}) == 400
    with pytest.raises(ValueError, match="skip must be in"):
        s.start(0, skip=51)


@pytest.mark.parametrize("n,world", [(50, 2), (50, 3), (7, 4)])
def test_rank_shards_follow_distributed_sampler_layout(n: int, world: int) -> None:
    data = list(range(n))
    shards = [EpochShuffleSampler(data, seed=1, num_replicas=world, rank=r) for r in range(world)]
    assert all(isinstance(s, DistributedSampler) for s in shards)  # so Lightning does not wrap or replace it
    per_rank = -(-n // world)
    order = EpochShuffleSampler(data, seed=1).epoch_indices(0)  # the whole permutation (one rank)
    padded = (order * world)[:per_rank * world]  # padding repeats the start of the permutation
    for r, s in enumerate(shards):
        assert len(s) == per_rank and list(s) == padded[r::world]
    seen = [i for s in shards for i in s]
    assert sorted(set(seen)) == data and len(seen) == per_rank * world  # every item, n % world repeats


def test_loader_walks_passes_and_resumes_from_its_state() -> None:
    straight = _loader()
    assert len(straight) == 6  # 50 // 8, the last 2 items of each pass dropped
    stream = [_items(straight) for _ in range(3)]  # three passes
    s = straight.sampler
    assert stream == [[i for i in s.epoch_indices(e)[:48]] for e in range(3)]

    first = _loader()
    it = iter(first)
    head = [next(it) for _ in range(4)]  # pass 0, 4 of 6 batches
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 4, "batch_size": 8, "seed": 3}
    resumed = _loader()
    resumed.load_state_dict(state)
    rest = _items(resumed)
    assert _items(head) + rest == stream[0]
    assert resumed.state_dict()["batches"] == 6
    assert _items(resumed) == stream[1]  # a used-up pass: the next one
    # a state saved at the end of a pass resumes with the next pass
    ended = _loader()
    ended.load_state_dict({"epoch": 1, "batches": 6, "batch_size": 8, "seed": 3})
    assert _items(ended) == stream[2]
    # Lightning's set_epoch between creating the iterator and the first batch does not change the order
    late = _loader()
    late.load_state_dict(state)
    it = iter(late)
    late.sampler.set_epoch(7)
    assert _items(list(it)) == rest
    with pytest.warns(UserWarning, match="batch_size 16 and seed 3, this run 8 and 3"):
        _loader().load_state_dict({**state, "batch_size": 16})


def test_loader_counts_in_the_main_process_with_workers() -> None:
    loader = _loader(num_workers=1)
    it = iter(loader)
    got = [next(it) for _ in range(2)]  # the worker has prefetched more than 2 batches by now
    assert loader.state_dict()["batches"] == 2
    assert _items(got) == loader.sampler.epoch_indices(0)[:16]
    del it


def test_salted_flips_are_pure_functions_of_seed_epoch_and_item() -> None:
    images = torch.arange(40 * 4, dtype=torch.float32).reshape(40, 1, 1, 4)
    flip = RandomHFlip(images)
    s = EpochShuffleSampler(images, seed=2, salted=True)
    keys = list(s)
    assert [k[0] for k in keys] == s.epoch_indices(0) and keys == list(EpochShuffleSampler(images, 2, salted=True))
    torch.manual_seed(0)
    a = [flip[k] for k in keys]
    torch.manual_seed(1)
    b = [flip[k] for k in keys]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    flipped = [torch.equal(x, images[i].flip(-1)) for x, (i, _) in zip(a, keys)]
    expected = [uniform_from_seed(mix_seed(2, 0, i)) < 0.5 for i, _ in keys]
    assert flipped == expected and 8 <= sum(flipped) <= 32
    assert all(f or torch.equal(x, images[i]) for f, x, (i, _) in zip(flipped, a, keys))
    s.set_epoch(1)
    seeds0, seeds1 = dict(keys), dict(s)
    assert all(seeds0[i] != seeds1[i] for i in seeds0)  # another epoch draws other flips


def test_datamodule_train_loader_shards_by_trainer_and_seeds(monkeypatch) -> None:
    dm = DiffusionDataModule("toy2d", batch_size=16, n=200, seed=2, val_fraction=0.1, shuffle_seed=4)
    dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 1}, world_size=2)
    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(loader, ResumableDataLoader) and isinstance(sampler, EpochShuffleSampler)
    assert (sampler.num_replicas, sampler.rank, sampler.seed, len(loader)) == (2, 1, 4, 90 // 16)
    assert loader.drop_last
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    dm2 = DiffusionDataModule("toy2d", batch_size=16, n=200, seed=2)
    assert dm2.train_dataloader().sampler.seed == 11  # shuffle_seed None: the run seed
    with pytest.raises(ValueError, match=r"data\.shuffle_seed: got float 1\.5 — expected int \| None"):
        DiffusionDataModule("toy2d", shuffle_seed=1.5)
