"""The sampler hierarchy (issue 12 item 4): one registration place, step vs adaptive budgets, edm_sde presets/cap."""
from __future__ import annotations

import math
import pkgutil
import sys
import warnings

import pytest
import torch

import fastdiff.samplers as samplers_pkg
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import VE, VP
from fastdiff.registry import SAMPLERS
from fastdiff.samplers import AdaptiveSampler, SamplerError, StepSampler, get_sampler
from fastdiff.samplers.edm import EDM_SDE_PRESETS

MIX = GaussianMixture.gaussian([0.5, -0.3], [[0.3, 0.1], [0.1, 0.2]])


def test_every_module_of_the_package_is_imported_and_registers_its_samplers():
    """Importing fastdiff.samplers imports every module in it, so each @register_sampler ran: a new file needs no
    line elsewhere. Every registered class lives in one of those modules."""
    modules = {f"fastdiff.samplers.{m.name}" for m in pkgutil.iter_modules(samplers_pkg.__path__)}
    assert modules <= set(sys.modules)
    assert {SAMPLERS.get(n).__module__ for n in SAMPLERS.names()} <= modules
    assert {"restart", "ggf", "sps", "sscs", "edm_sde", "euler_maruyama"} <= set(SAMPLERS.names())


def test_step_and_adaptive_samplers_are_separate_branches():
    for name in SAMPLERS.names():
        cls = SAMPLERS.get(name)
        assert issubclass(cls, StepSampler) != issubclass(cls, AdaptiveSampler), name
        assert cls.adaptive == issubclass(cls, AdaptiveSampler)
    ggf, em = get_sampler("ggf"), get_sampler("euler_maruyama", nfe=11)
    assert not hasattr(ggf, "steps") and not hasattr(ggf, "nfe_for")
    assert "steps" not in ggf.config() and em.config()["steps"] == 10
    with pytest.raises(SamplerError, match="adaptive and takes no nfe="):
        get_sampler("ggf", nfe=20)


# ---- edm_sde: the paper's Table 5 presets, the sigma_hat cap made explicit -----------------------------------
def test_edm_sde_presets_are_table_5():
    """Karras et al. 2022, Table 5: CIFAR-10 VP 30 / 0.01 / 1 / 1.007; VE 80 / 0.05 / 1 / 1.007; ImageNet-64."""
    assert EDM_SDE_PRESETS["cifar10_vp"] == (30.0, 0.01, 1.0, 1.007)
    assert EDM_SDE_PRESETS["cifar10_ve"] == (80.0, 0.05, 1.0, 1.007)
    assert EDM_SDE_PRESETS["imagenet64"] == (40.0, 0.05, 50.0, 1.003)  # == the defaults
    o = get_sampler("edm_sde", preset="cifar10_vp", steps=18).options
    assert (o.S_churn, o.S_min, o.S_max, o.S_noise) == (30.0, 0.01, 1.0, 1.007)
    d = get_sampler("edm_sde").options
    assert (d.S_churn, d.S_min, d.S_max, d.S_noise) == EDM_SDE_PRESETS["imagenet64"]
    with pytest.raises(SamplerError, match="preset 'cifar10_vp' fixes S_churn=30.0"):
        get_sampler("edm_sde", preset="cifar10_vp", S_churn=10.0)
    cfg = get_sampler("edm_sde", preset="cifar10_ve", steps=9).config()
    assert get_sampler(**cfg).config() == cfg


def test_sigma_hat_is_never_silently_capped():
    """VE with sigma_max 5 and churn at the top: published sigma_hat = 5 (1 + min(40/5, sqrt 2 - 1)) = 5 sqrt 2."""
    process = VE(sigma_min=0.01, sigma_max=5.0)
    kw = dict(steps=5, S_churn=40.0, S_min=4.9, S_max=5.1)
    sigmas = get_sampler("edm_sde", **kw).sigmas(process, torch.device("cpu"))
    published = get_sampler("edm_sde", sigma_hat_cap="none", **kw).sigma_hats(process, sigmas)
    assert float(published[0]) == pytest.approx(5.0 * math.sqrt(2.0), rel=1e-12)
    calls = []

    def score(z, t):
        calls.append(1)
        return MIX.score_fn(process)(z, t)

    with pytest.raises(SamplerError, match="exceeds the trained sigma_max 5"):
        get_sampler("edm_sde", sigma_hat_cap="error", **kw).sample(score, process, (3, 2), seeds=range(3))
    assert not calls  # refused before any work
    with pytest.warns(RuntimeWarning, match="capped there"):
        clamped = get_sampler("edm_sde", **kw).sample(score, process, (3, 2), seeds=range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'none' and settings inside the range do not warn
        free = get_sampler("edm_sde", sigma_hat_cap="none", **kw).sample(score, process, (3, 2), seeds=range(3))
        get_sampler("edm_sde", preset="cifar10_vp", steps=5).sample(MIX.score_fn(VP()), VP(), (3, 2), seeds=range(3))
    assert not torch.allclose(clamped.x, free.x)
