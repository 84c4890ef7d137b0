import pytest

from fastdiff.seeds import parse_seeds, rank_batches


def test_parse_seeds_forms():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,5,10-12") == [0, 5, 10, 11, 12]
    assert parse_seeds(range(3)) == [0, 1, 2]
    assert parse_seeds(7) == [7]


@pytest.mark.parametrize("bad", ["", "5-2", "a-b", "1--3", "-1", [1, -2], "1,1"])
def test_malformed_seeds(bad):
    with pytest.raises(ValueError, match="seeds|seed list"):
        parse_seeds(bad)


@pytest.mark.parametrize("n,batch,world", [(10, 3, 1), (10, 3, 2), (50000, 64, 8), (5, 4, 3), (1, 8, 2)])
def test_rank_batches_partition_the_seeds(n, batch, world):
    seeds = list(range(100, 100 + n))
    per_rank = [rank_batches(seeds, batch, world, r) for r in range(world)]
    flat = sorted(s for batches in per_rank for b in batches for s in b)
    assert flat == seeds
    assert all(len(b) <= batch for batches in per_rank for b in batches)
    counts = [len(batches) for batches in per_rank]
    assert len(set(counts)) == 1  # every rank runs the same number of batches: no rank waits alone
    # EDM's rule: ceil(S / (batch * world)) * world batches, rank r takes r, r + world, ...
    import math
    assert sum(counts) == max(1, math.ceil(n / (batch * world))) * world
