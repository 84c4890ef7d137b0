import pytest

from fastdiff.seeds import parse_seeds, rank_batches


def test_parse_seeds_forms():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,5,10-12") == [0, 5, 10, 11, 12]
    assert parse_seeds(range(3)) == [0, 1, 2]
    assert parse_seeds(7) == [7]
    assert parse_seeds("10") == [10]  # a string is one grammar, never iterated character by character
    assert parse_seeds([3, 1]) == [3, 1]  # order as given


@pytest.mark.parametrize("bad,message", [
    ("", "malformed seed list ''"),
    ("5-2", "range 5-2 in '5-2' ends below its start — write it as 2-5"),
    ("a-b", "malformed seed list 'a-b'"),
    ("1--3", "malformed seed list '1--3'"),
    ("-1", "malformed seed list '-1'"),
    ([1, -2], "item -2 of [1, -2] is not an int >= 0"),
    ([1, True], "item True of [1, True] is not an int >= 0"),
    ("1,1", "'1,1' lists seed 1 more than once"),
    ("0-3,2", "'0-3,2' lists seed 2 more than once"),
    ([], "seeds is empty ([])"),
    (-3, "seed -3 is negative"),
    (True, "True is not a seed list"),
    (2.5, "2.5 is not a seed list"),
    ("0-99999999999", "'0-99999999999' names 100000000000 seeds — at most 10000000 per run"),
    (range(10**12), "range(0, 1000000000000) names 1000000000000 seeds — at most"),
])
def test_malformed_seeds(bad, message):
    with pytest.raises(ValueError) as info:
        parse_seeds(bad)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_seed_count_is_checked_before_a_list_is_built(monkeypatch):
    """'0-99999999999' would need ~4 TB as a list: refused from the range bounds alone (a built list of that size
    would raise MemoryError long before the check)."""
    import fastdiff.seeds as seeds_mod

    with pytest.raises(ValueError, match="at most 5 per run"):
        seeds_mod.parse_seeds("0-5", max_seeds=5)
    assert seeds_mod.parse_seeds("0-4", max_seeds=5) == [0, 1, 2, 3, 4]


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
