"""benchmarks.peers_psld: torchsde fixed-step and torchdiffeq fixed-grid peers on PSLD (bench environment only)."""
from __future__ import annotations

import math

import pytest
import torch

from benchmarks import peers, peers_psld
from benchmarks.instrument import pathwise_error
from benchmarks.noise import BatchNoise
from benchmarks.quality import reference_plan
from benchmarks.specs import RunSpec
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.samplers import get_sampler

HAVE_SDE = peers.torchsde_module() is not None
HAVE_ODE = peers_psld.torchdiffeq_module() is not None
needs_sde = pytest.mark.skipif(not HAVE_SDE, reason="torchsde not installed (benchmarks/setup_peers.sh)")
needs_ode = pytest.mark.skipif(not HAVE_ODE, reason="torchdiffeq not installed (benchmarks/setup_peers.sh)")
MEAN, STD = torch.tensor([0.5, -1.0]), torch.tensor([0.3, 0.2])
GAUSS = GaussianMixture.gaussian(MEAN.tolist(), torch.diag(STD**2).tolist())


def _names() -> list[str]:
    return (list(peers_psld.TSDE_FIXED) if HAVE_SDE else []) + (list(peers_psld.TDE_FIXED) if HAVE_ODE else [])


def test_step_count_is_the_largest_that_fits_and_formulas_are_the_libraries() -> None:
    for name in list(peers_psld.TSDE_FIXED) + list(peers_psld.TDE_FIXED):
        for b in (5, 6, 10, 35, 100):
            n = peers_psld.steps_for(name, b)
            assert n == 0 or peers_psld.nfe_of(name, n) <= b
            assert peers_psld.nfe_of(name, n + 1) > b
    # hand-counted from the libraries' step functions (+1 sdeint shape check for torchsde, +1 final denoise)
    assert [peers_psld.nfe_of("torchsde:euler", 4), peers_psld.nfe_of("torchsde:reversible_heun", 4),
            peers_psld.nfe_of("torchsde:midpoint", 4), peers_psld.nfe_of("torchsde:srk_fixed", 4)] == [6, 7, 10, 14]
    assert [peers_psld.nfe_of("torchdiffeq:euler", 4), peers_psld.nfe_of("torchdiffeq:midpoint@logsnr", 4),
            peers_psld.nfe_of("torchdiffeq:rk4", 4), peers_psld.nfe_of("torchdiffeq:explicit_adams", 1),
            peers_psld.nfe_of("torchdiffeq:explicit_adams", 4)] == [5, 9, 17, 5, 11]


def test_psld_peers_only_for_processes_without_an_edm_view() -> None:
    assert peers_psld.psld_peer_specs(VP(), (10,), True) == peers_psld.psld_peer_specs(VE(), (10,), True) == []
    names = {s.method for s in peers.peer_specs(PSLD(), (10,))}
    assert set(_names()) <= names
    assert all(s.budget is not None for s in peers.peer_specs(PSLD(), (10,)) if s.method in peers_psld.TDE_FIXED)
    assert set(peers_psld.TDE_FIXED) <= peers.DETERMINISTIC and not set(peers_psld.TSDE_FIXED) & peers.DETERMINISTIC


@pytest.mark.skipif(not (HAVE_SDE or HAVE_ODE), reason="torchsde / torchdiffeq not installed")
@pytest.mark.parametrize("budget", [5, 8, 20])
def test_counted_nfe_equals_the_declared_formula(budget: int) -> None:
    proc, n = PSLD(), 8
    for name in _names():
        res = peers.run_peer(RunSpec("peer", name, budget=budget), GAUSS.score_fn(proc), proc, (n, 2),
                             BatchNoise(range(n)))
        want = peers_psld.nfe_of(name, peers_psld.steps_for(name, budget))
        assert res.nfe == res.nfe_declared == want <= budget, name


@needs_ode
def test_ode_peers_converge_to_the_reference_solve() -> None:
    """Pathwise error to our reference solve (exp_ode at high NFE, the benchmark's PSLD reference) over budgets
    25, 50, 100, 200 (step counts about doubling): each error <= 0.6 x the previous. Derivation: every peer is
    at least first order (Euler), so asymptotically a halved step at least halves the global error (ratio
    2^-p <= 1/2); 0.1 more allows step counts that only nearly double (Euler 24 -> 49: ratio 24/49 = 0.49) and the
    O(h^(p+1)) term. The reference's own error (<= its difference to half its NFE, for any method of order >= 1)
    must be below 1/10 of the smallest error measured, so it cannot decide a ratio (its float32 floor is ~2e-6:
    at NFE 4000 it is no closer to NFE 2000 than at 2000 to 1000)."""
    proc, n = PSLD(), 64
    score = GAUSS.score_fn(proc)
    name, _ = reference_plan(proc, 399)
    ref = get_sampler(name, nfe=2000).sample(score, proc, (n, 2), noise=BatchNoise(range(n))).x
    ref_half = get_sampler(name, nfe=1000).sample(score, proc, (n, 2), noise=BatchNoise(range(n))).x
    ref_err = pathwise_error(ref_half, ref)
    smallest = math.inf
    for peer in peers_psld.TDE_FIXED:
        errs = [pathwise_error(peers.run_peer(RunSpec("peer", peer, budget=b), score, proc, (n, 2),
                                              BatchNoise(range(n))).x, ref) for b in (25, 50, 100, 200)]
        assert all(e1 <= 0.6 * e0 for e0, e1 in zip(errs, errs[1:])), (peer, errs)
        smallest = min(smallest, errs[-1])
    assert ref_err < smallest / 10, (ref_err, smallest)


@needs_sde
@pytest.mark.parametrize("name, proc", [("torchsde:euler", PSLD()), ("torchsde:midpoint", PSLD()),
                                        ("torchsde:srk_fixed", PSLD()), ("torchsde:reversible_heun", VP())])
def test_sde_peers_sample_the_gaussian(name: str, proc) -> None:
    """Mean and std of n = 2000 samples at NFE 400 within 4 standard errors of the closed form: SE(mean) =
    sigma / sqrt(n), SE(std) ~ sigma / sqrt(2n) (Gaussian), so a correct sampler fails a coordinate with
    probability ~6e-5; the discretisation bias at NFE 400 is far below that (weak order >= 1). reversible_heun
    runs on VP: on PSLD it diverges at every NFE the benchmark uses (std ~14 at NFE 400), its stability region
    being too small for PSLD's damped linear drift; VP checks the adapter itself."""
    n = 2000
    res = peers.run_peer(RunSpec("peer", name, budget=400), GAUSS.score_fn(proc), proc, (n, 2), BatchNoise(range(n)))
    assert bool(torch.isfinite(res.x).all())
    assert ((res.x.mean(0) - MEAN).abs() <= 4 * STD / math.sqrt(n)).all(), res.x.mean(0)
    assert ((res.x.std(0) - STD).abs() <= 4 * STD / math.sqrt(2 * n)).all(), res.x.std(0)


def test_reference_plan_uses_exp_ode_without_an_edm_view() -> None:
    """PSLD: exp_ode at 1.5 x ref_nfe (ode_heun at 399 is 2.5e-2 from itself at 199 on psld/image64/exact);
    VE/VP keep edm_heun at ref_nfe."""
    assert reference_plan(PSLD(), 399) == ("exp_ode", 598)
    assert reference_plan(VP(), 399) == reference_plan(VE(), 399) == ("edm_heun", 399)
