"""The fixed compute micro-batch of the sampler contract (CountedScore): the network only ever sees batches of
``compute_batch`` rows, so a sample's output cannot depend on how many samples share its batch; and the score
function's output shape is checked."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from fastdiff.processes import VP
from fastdiff.samplers import SamplerError, get_sampler

D = 3


class ShapeSensitiveScore:
    """The score of N(0, I) under VP, times a factor that depends on the batch size it is called with.

    It stands in for CPU kernels whose rounding depends on the input shape (GEMM blocking): the factor
    1 + 1e-3 * rows changes results far above float rounding, so any batch-size dependence shows up.
    """

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        self.shapes.append(tuple(z.shape))
        return -z * (1.0 + 1e-3 * z.shape[0])


SAMPLERS = [("edm_heun", {"nfe": 9}), ("euler_maruyama", {"nfe": 10}), ("ggf", {"eps_rel": 0.1})]


@pytest.mark.parametrize("name,kw", SAMPLERS)
def test_fixed_micro_batch_makes_outputs_batch_size_invariant(name: str, kw: dict) -> None:
    seeds = list(range(17))
    outs = {}
    for batch in (3, 10, 17):
        fn = ShapeSensitiveScore()
        parts = [get_sampler(name, compute_batch=8, **kw).sample(fn, VP(), (len(chunk), D), seeds=chunk).x
                 for chunk in (seeds[i:i + batch] for i in range(0, len(seeds), batch))]
        outs[batch] = torch.cat(parts)
        assert set(fn.shapes) == {(8, D)}  # every network call had exactly compute_batch rows
    assert torch.equal(outs[3], outs[10]) and torch.equal(outs[3], outs[17])
    # the same check without the micro-batch fails: the shape dependence reaches the samples
    direct = [get_sampler(name, compute_batch=0, **kw).sample(ShapeSensitiveScore(), VP(), (b, D),
                                                                 seeds=seeds[:b]).x for b in (3, 17)]
    assert not torch.equal(direct[0], direct[1][:3])


def test_padding_rows_do_not_count_as_evaluations() -> None:
    res = get_sampler("edm_heun", nfe=9, compute_batch=8).sample(ShapeSensitiveScore(), VP(), (5, D), seeds=range(5))
    assert res.nfe == 9 and torch.equal(res.nfe_per_sample, torch.full((5,), 9))


@pytest.mark.parametrize("bad,what", [(lambda z, t: z.sum(), "()"), (lambda z, t: z[:, :1], "(8, 1)"),
                                      (lambda z, t: z.numpy(), "ndarray")])
def test_score_of_the_wrong_shape_is_an_error(bad, what: str) -> None:
    with pytest.raises(SamplerError, match=r"score_fn returned .*" + what.replace("(", r"\(").replace(")", r"\)")):
        get_sampler("edm_euler", nfe=4, compute_batch=8).sample(bad, VP(), (2, D), seeds=[0, 1])


def test_negative_compute_batch_is_refused() -> None:
    with pytest.raises(SamplerError, match="compute_batch must be >= 0"):
        get_sampler("edm_heun", nfe=9, compute_batch=-1)
