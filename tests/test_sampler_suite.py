"""The shared suite every registered sampler runs through (shapes, determinism, batching, NFE, options)."""
from __future__ import annotations

import math

import pytest
import torch

from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.registry import SAMPLERS
from fastdiff.samplers import SamplerError, SamplingNaNError, get_sampler, list_samplers

PROCESSES = {"ve": lambda: VE(sigma_min=0.01, sigma_max=5.0), "vp": VP, "psld": PSLD}
MIXTURE = GaussianMixture([0.3, 0.7], [[1.0, -0.5], [-1.0, 0.5]],
                          [[[0.2, 0.05], [0.05, 0.1]], [[0.1, 0.0], [0.0, 0.3]]])


def suite_kwargs(name: str) -> dict:
    cls = SAMPLERS.get(name)
    fn = getattr(cls, "suite_kwargs", None)
    return dict(fn()) if fn is not None else {"nfe": 20}


def cases() -> list:
    out = []
    for name in list_samplers():
        for pname, make in PROCESSES.items():
            if SAMPLERS.get(name).supports(make()):
                out.append(pytest.param(name, pname, id=f"{name}-{pname}"))
    return out


def run(name: str, pname: str, seeds, shape_tail=(2,), **override):
    process = PROCESSES[pname]()
    kwargs = {**suite_kwargs(name), **override}
    sampler = get_sampler(name, **kwargs)
    seeds = list(seeds)
    return sampler, sampler.sample(MIXTURE.score_fn(process), process, (len(seeds), *shape_tail), seeds=seeds)


@pytest.mark.parametrize("name,pname", cases())
def test_shapes_and_dtype(name, pname):
    process = PROCESSES[pname]()
    sampler, res = run(name, pname, range(6))
    assert res.x.shape == (6, 2) and res.x.dtype == torch.float32
    assert res.state.shape == process.state_shape((6, 2))
    assert torch.isfinite(res.x).all()
    assert res.nfe_per_sample.shape == (6,) and res.calls >= 1
    assert res.seeds == list(range(6))


@pytest.mark.parametrize("name,pname", cases())
def test_same_seeds_same_output(name, pname):
    _, a = run(name, pname, range(5))
    _, b = run(name, pname, range(5))
    assert torch.equal(a.state, b.state)
    _, c = run(name, pname, range(5, 10))
    assert not torch.allclose(a.x, c.x)


@pytest.mark.parametrize("name,pname", cases())
def test_batch_size_and_composition_invariance(name, pname):
    _, full = run(name, pname, range(8))
    _, first = run(name, pname, range(3))
    _, rest = run(name, pname, range(3, 8))
    torch.testing.assert_close(torch.cat([first.x, rest.x]), full.x, atol=1e-6, rtol=1e-6)
    _, shuffled = run(name, pname, [6, 1, 4])
    torch.testing.assert_close(shuffled.x, full.x[[6, 1, 4]], atol=1e-6, rtol=1e-6)
    if not SAMPLERS.get(name).adaptive:
        assert first.nfe == rest.nfe == full.nfe


@pytest.mark.parametrize("name,pname", cases())
def test_nfe_is_counted_and_matches_budget(name, pname):
    cls = SAMPLERS.get(name)
    if cls.adaptive:
        _, res = run(name, pname, range(4))
        assert res.nfe_per_sample.min() >= 1
        assert math.isclose(float(res.nfe), res.nfe_per_sample.double().mean().item())
        return
    process = PROCESSES[pname]()
    base = {k: v for k, v in suite_kwargs(name).items() if k not in ("nfe", "steps")}
    score = MIXTURE.score_fn(process)
    for budget in (10, 20, 35, 50):
        if budget < cls(steps=cls.min_steps, **base).nfe:
            with pytest.raises(SamplerError, match="minimum"):
                get_sampler(name, nfe=budget, **base)
            continue
        sampler = get_sampler(name, nfe=budget, **base)
        # the evaluations actually made, per sample, against the formula and the budget
        res = sampler.sample(score, process, (3, 2), seeds=range(3))
        assert (res.nfe_per_sample == sampler.nfe_for(sampler.steps)).all(), (res.nfe_per_sample, sampler.steps)
        assert res.nfe <= budget
        # the budget is used as fully as the structure allows: one more step would exceed it, counted
        more = get_sampler(name, steps=sampler.steps + 1, **base)
        assert more.sample(score, process, (1, 2), seeds=[0]).nfe > budget, (budget, sampler.steps)


@pytest.mark.parametrize("name", list_samplers())
def test_bad_options_and_budgets(name):
    with pytest.raises(TypeError, match="unknown option"):
        get_sampler(name, **suite_kwargs(name), definitely_not_an_option=1)
    cls = SAMPLERS.get(name)
    if not cls.adaptive:
        with pytest.raises(SamplerError, match="minimum"):
            get_sampler(name, nfe=0)
        with pytest.raises(SamplerError):
            get_sampler(name, nfe=20, steps=5)
    with pytest.raises((TypeError, ValueError)):
        get_sampler(name, **suite_kwargs(name), dtype="float16")


@pytest.mark.parametrize("name", list_samplers())
def test_unsupported_process_is_a_clear_error(name):
    cls = SAMPLERS.get(name)
    for pname, make in PROCESSES.items():
        process = make()
        if not cls.supports(process):
            sampler = get_sampler(name, **suite_kwargs(name))
            with pytest.raises(SamplerError, match="supports"):
                sampler.sample(MIXTURE.score_fn(process), process, (2, 2), seeds=range(2))


def test_unknown_sampler_lists_names():
    with pytest.raises(KeyError, match="euler_maruyama"):
        get_sampler("no_such_sampler", nfe=10)


@pytest.mark.parametrize("name,pname", cases())
def test_config_round_trip(name, pname):
    sampler, res = run(name, pname, range(3))
    cfg = sampler.config()
    clone = get_sampler(**cfg)
    assert clone.config() == cfg
    process = PROCESSES[pname]()
    again = clone.sample(MIXTURE.score_fn(process), process, (3, 2), seeds=range(3))
    assert torch.equal(again.state, res.state)


@pytest.mark.parametrize("name,pname", cases())
def test_float64_state_and_image_shapes(name, pname):
    process = PROCESSES[pname]()
    mix = GaussianMixture.gaussian(torch.zeros(4), 0.25 * torch.eye(4))
    sampler = get_sampler(name, **suite_kwargs(name), dtype="float64")
    res = sampler.sample(mix.score_fn(process), process, (3, 1, 2, 2), seeds=range(3))
    assert res.state.dtype == torch.float64
    assert res.state.shape == process.state_shape((3, 1, 2, 2))
    assert res.x.shape == (3, 1, 2, 2) and res.x.dtype == torch.float32


@pytest.mark.parametrize("name,pname", cases())
def test_nan_is_reported_with_seeds(name, pname):
    process = PROCESSES[pname]()
    good = MIXTURE.score_fn(process)

    def poisoned(z, t):
        s = good(z, t)
        s[0] = float("nan")  # the first row of every call: seed 7 when the sampler calls on the whole batch
        return s

    sampler = get_sampler(name, **suite_kwargs(name))
    with pytest.raises(SamplingNaNError, match=r"seeds: 7") as err:
        sampler.sample(poisoned, process, (3, 2), seeds=[7, 8, 9])
    if not SAMPLERS.get(name).adaptive:  # whole-batch calls: only seed 7 was poisoned, and no sample mixes others in
        assert err.value.seeds == [7]


def test_duplicate_registration_is_an_error():
    from fastdiff.samplers import register_sampler
    from fastdiff.samplers.sde import EulerMaruyama

    with pytest.raises(ValueError, match="already registered"):
        register_sampler("euler_maruyama")(EulerMaruyama)
