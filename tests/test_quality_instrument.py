"""The quality instrument: the oracle's exact data log-density, the log-likelihood gap / dispersion / mode-weight
metrics and their SEs, the paired comparison, stored parts, the diffusers adapter and the checkpoints command."""
from __future__ import annotations

import argparse
import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from benchmarks import peers
from benchmarks.instrument import Instrument, compare, compare_paths, path_se, pathwise_error
from benchmarks.noise import BatchNoise
from benchmarks.quality import QualityConfig, Row, run_quality
from benchmarks.quality_cache import RefStats, load_parts, rebuild, save_part
from benchmarks.specs import RunSpec
from benchmarks.tables import quality_markdown
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.samplers import get_sampler


def torch_mixture(mix: GaussianMixture) -> MixtureSameFamily:
    """The same law in torch.distributions: an independent implementation of the density."""
    return MixtureSameFamily(Categorical(mix.weights), MultivariateNormal(mix.means, mix.covs))


@pytest.mark.parametrize("mix", [GaussianMixture.random(4, 5, seed=1), GaussianMixture.image_like(5, 4, seed=2)])
def test_log_density_assignment_and_mahalanobis_match_torch_distributions(mix: GaussianMixture) -> None:
    x = mix.sample(200, torch.Generator().manual_seed(0))
    # float64 throughout: agreement to ~1e-10 of log-densities of size ~10 (round-off only)
    assert torch.allclose(mix.log_density(x), torch_mixture(mix).log_prob(x), atol=1e-9)
    comp_lp = torch.stack([torch.log(mix.weights[j]) + MultivariateNormal(mix.means[j], mix.covs[j]).log_prob(x)
                           for j in range(len(mix.weights))])
    assert torch.equal(mix.assign(x), comp_lp.argmax(0))
    c = mix.assign(x)
    diff = x - mix.means[c]
    want = torch.einsum("bi,bij,bj->b", diff, torch.linalg.inv(mix.covs[c]), diff)
    assert torch.allclose(mix.mahalanobis_sq(x, c), want, rtol=1e-9)


def test_diagonal_fast_path_equals_the_rotated_path() -> None:
    mix = GaussianMixture.image_like(6, 4, seed=3)
    assert mix.is_diagonal
    full = GaussianMixture(mix.weights, mix.means, mix.covs)
    full.is_diagonal = False  # force the eigenbasis route on the same law
    for proc in (VP(), VE(), PSLD()):
        z = torch.randn(300, 16 * proc.k, dtype=torch.float64)  # 300 rows: more than one evaluation block
        t = torch.rand(300, dtype=torch.float64) * 0.9 + 0.05
        assert torch.allclose(mix.score(proc, z, t), full.score(proc, z, t), rtol=1e-9, atol=1e-9)
        assert torch.allclose(mix.log_prob(proc, z, 0.3), full.log_prob(proc, z, 0.3), rtol=1e-12, atol=1e-9)


def _scaled(mix: GaussianMixture, x: torch.Tensor, f: float) -> torch.Tensor:
    """Every point moved to mu_c + f (x - mu_c) about its assigned component: dispersion exactly x f per mode."""
    c = mix.assign(x)
    return mix.means[c] + f * (x - mix.means[c])


def test_instrument_on_exact_blurred_and_sharpened_samples() -> None:
    mix = GaussianMixture.image_like(5, 8, seed=0)  # 64-d, well separated modes
    n = 2000
    inst = Instrument(mix, n, n_ref=20000, secondary=False)
    exact = inst(mix.sample(n, torch.Generator().manual_seed(7)))
    # exact samples: gap / SE ~ N(0, 1); |z| > 4 has probability 6e-5
    assert abs(exact.gap) < 4 * exact.gap_se
    # dispersion: per mode sqrt(mean chi2_64 / reference mean); relative SD of a mode's mean is sqrt(2 / (64 n_j))
    # <= 0.6 % for n_j >= 100, so 3 % is > 5 SD
    assert exact.disp == pytest.approx(1.0, abs=0.03)
    # mode weights: TV of K = 5 multinomial frequencies, E ~ sum sqrt(w(1-w) / n) / 2 * sqrt(2/pi) < 0.02
    assert exact.wtv < 0.04
    x = mix.sample(n, torch.Generator().manual_seed(8))
    blur, sharp = inst(_scaled(mix, x, 1.3)), inst(_scaled(mix, x, 0.7))
    assert blur.gap > 4 * blur.gap_se and sharp.gap < -4 * sharp.gap_se  # the sign convention
    # scaling about the assigned mean multiplies each Mahalanobis distance by f exactly; the ratio to the
    # reference then carries only the exact sample's spread (above: 3 %)
    assert blur.disp == pytest.approx(1.3, rel=0.03) and sharp.disp == pytest.approx(0.7, rel=0.03)
    assert blur.disp_worst > 1.2 and sharp.disp_worst < 0.8
    # the gap of a Gaussian component scaled by f: E[log p] drops by (f^2 - 1) d / 2 nats (d = 64), to first order
    # in the mixture's overlap (negligible here)
    assert blur.gap == pytest.approx((1.3**2 - 1) * 64 / 2, rel=0.05)
    # dropping one mode (its samples moved to another) costs its weight in TV
    c = mix.assign(x)
    moved = x.clone()
    j = int(c[0])
    other = (j + 1) % 5
    moved[c == j] = mix.means[other] + (x[c == j] - mix.means[j])
    assert inst(moved).wtv == pytest.approx(inst.ref_freq[j].item(), abs=0.04)


def test_paired_comparison_se_matches_repeated_experiments() -> None:
    """The SE of D = |gap_a| - |gap_b| from one experiment vs the spread of D over 150 independent experiments."""
    mix = GaussianMixture.ring(4, 1.0, 0.2)
    n, reps = 200, 150
    inst = Instrument(mix, n, n_ref=20000, secondary=False)
    ds, ses = [], []
    g = torch.Generator().manual_seed(0)
    for _ in range(reps):
        x = mix.sample(n, g)
        a, b = inst(_scaled(mix, x, 1.2)), inst(_scaled(mix, x, 0.9))  # correlated pair, opposite signs
        d, se = compare(a, b, inst.ref_var, inst.m)
        assert d == pytest.approx(abs(a.gap) - abs(b.gap))
        ds.append(d)
        ses.append(se)
    spread = torch.tensor(ds).std().item()
    # the spread's own relative SD over 150 repeats is ~1/sqrt(2*149) = 6 %; the reference's share (fixed here,
    # random in the SE) is small at m = 20000: 25 % covers > 4 SD
    assert sum(ses) / reps == pytest.approx(spread, rel=0.25)


def test_same_algorithm_in_two_codebases_is_a_tie() -> None:
    """Round-off-level differences (paired SE ~ 0) must not decide a cell: the cell SE is at least the
    independent-samples SE."""
    from benchmarks.quality import QualityResult
    from benchmarks.tables import duel, verdict

    mix = GaussianMixture.ring(4, 1.0, 0.2)
    inst = Instrument(mix, 300, n_ref=3000, secondary=False)
    x = mix.sample(300, torch.Generator().manual_seed(1))
    rows = []
    for eps in (0.0, 1e-6):
        r = Row("p", "x", "x", "x", 10, None)
        r.metrics = m = inst(x + eps)
        r.gap, r.gap_se = m.gap, m.gap_se
        rows.append(r)
    res = QualityResult([], {"p": inst}, {}, rows, {}, [], 0.0)
    d, se = duel(rows[0], rows[1], res)
    assert se >= math.hypot(rows[0].gap_se, rows[1].gap_se) and verdict(d, se) == "tie"


def test_pathwise_error_is_rms_per_coordinate() -> None:
    x = torch.zeros(4, 3)
    assert pathwise_error(x + 2.0, x) == pytest.approx(2.0)
    y = x.clone()
    y[0, 0] = 1.0
    assert pathwise_error(y, x) == pytest.approx(math.sqrt(1 / 12))


def test_path_se_and_paired_path_comparison_match_repeated_experiments() -> None:
    """SE of one RMS path error and of D = RMS_a - RMS_b (paired, delta method) from one experiment vs the spread
    over 300 independent experiments. Two 'solvers' miss the same reference by correlated errors of different
    sizes (e_b = 0.8 e_a + independent noise), n = 400 samples of dimension 3."""
    n, reps = 400, 300
    g = torch.Generator().manual_seed(0)
    ra, ds, ses_a, ses_d = [], [], [], []
    for _ in range(reps):
        base = torch.randn(n, 3, generator=g, dtype=torch.float64)
        ea = (0.1 * base).pow(2).mean(1)
        eb = (0.08 * base + 0.03 * torch.randn(n, 3, generator=g, dtype=torch.float64)).pow(2).mean(1)
        ra.append(ea.mean().sqrt().item())
        ses_a.append(path_se(ea))
        d, se = compare_paths(ea, eb)
        assert d == pytest.approx(ea.mean().sqrt().item() - eb.mean().sqrt().item())
        ds.append(d)
        ses_d.append(se)
    # the spread over 300 repeats has a relative SD of ~1/sqrt(2*299) = 4 %; the delta method's bias at n = 400 is
    # O(1/n): 15 % covers > 3 SD of the spread's own noise
    assert sum(ses_a) / reps == pytest.approx(torch.tensor(ra).std().item(), rel=0.15)
    assert sum(ses_d) / reps == pytest.approx(torch.tensor(ds).std().item(), rel=0.15)


def test_pathwise_tie_break_only_among_runs_that_tie_on_the_gap() -> None:
    """A peer run with a tiny path error but a gap worse beyond 2 SE must not decide the cell; among gap-tied runs
    the smaller path error wins beyond 2 SE plus twice the reference error, and a large reference error makes it a
    tie."""
    from benchmarks.tables import path_duel, path_verdict

    def row(family: str, label: str, gap: float, path_scale: float) -> Row:
        e = (path_scale * torch.linspace(0.5, 1.5, 500, dtype=torch.float64)).pow(2)
        r = Row("p", family, label, label, 10, None, nfe=10.0, deterministic=True, gap=gap, gap_se=0.1)
        r.path_sq, r.path = e, e.mean().sqrt().item()
        return r

    ours, peer, sharp = row("fastdiff", "a", 0.05, 0.01), row("peer", "b", -0.1, 0.02), row("peer", "c", -5.0, 0.001)
    rows = [ours, peer, sharp]
    po, pq, d, se = path_duel(rows, ours, peer, 10, (10,))
    assert (po.label, pq.label) == ("a", "b") and d == pytest.approx(ours.path - peer.path)
    assert path_verdict(d, se, 1e-4) == "won" and path_verdict(d, se, 0.01) == "tie"
    assert path_verdict(-d, se, 1e-4) == "lost"


def test_parts_round_trip_to_the_same_tables(tmp_path) -> None:
    cfg = QualityConfig(n=40, budgets=(10,), processes=("vp",), targets=("rings2d",), samplers=["edm_heun"],
                        peers=False, n_ref=400, ref_nfe=19)
    stored = []
    res = run_quality(cfg, on_problem=lambda p, rows, inst, e, b, s: stored.append(
        save_part(p, rows, RefStats(inst.ref_var, inst.m), e, b, "cmd", s, tmp_path)))
    (part,) = load_parts(root=tmp_path)
    prob, rows, stats = rebuild(part, Row)
    assert prob.key == "vp/rings2d/exact" and stats.m == res.instruments[prob.key].m
    assert [(r.label, r.gap, r.path) for r in rows] == [(r.label, r.gap, r.path) for r in res.rows]
    assert torch.equal(rows[0].metrics.logp, res.rows[0].metrics.logp)
    assert rows[0].path_sq is not None and torch.equal(rows[0].path_sq, res.rows[0].path_sq)  # the tie-break's data


diffusers_present = peers.diffusers_schedulers() is not None and peers.k_sampling() is not None


@pytest.mark.skipif(not diffusers_present, reason="diffusers / k-diffusion not installed (benchmarks/setup_peers.sh)")
@pytest.mark.parametrize("proc", [VP(), VE()])
def test_diffusers_dpmpp_2m_equals_k_diffusion_and_ours(proc) -> None:
    """The same algorithm (DPM-Solver++(2M), Karras grid, lower-order final step) through three codebases."""
    mix, n = GaussianMixture.ring(8, 1.0, 0.1), 64
    score = mix.score_fn(proc)
    d = peers.run_peer(RunSpec("peer", "d:dpmpp_2m_karras", budget=10), score, proc, (n, 2), BatchNoise(range(n)))
    k = peers.run_peer(RunSpec("peer", "k:dpmpp_2m", budget=10), score, proc, (n, 2), BatchNoise(range(n)))
    ours = get_sampler("dpmpp_2m", nfe=10).sample(score, proc, (n, 2), noise=BatchNoise(range(n))).x
    assert d.nfe == k.nfe == 10
    # diffusers keeps its sigmas in float32 (relative rounding 6e-8, amplified by the ODE's Lipschitz constant over
    # 10 steps): 1e-3 on data of scale 1 is far below any sampler difference the benchmark reports (> 1e-2)
    assert torch.allclose(d.x, k.x, atol=1e-3) and torch.allclose(ours, k.x, atol=1e-4)


@pytest.mark.skipif(not diffusers_present, reason="diffusers not installed (benchmarks/setup_peers.sh)")
def test_diffusers_schedule_covers_the_edm_range() -> None:
    from benchmarks.peers_diffusers import make_scheduler
    from fastdiff.samplers.grids import edm_sigma_range

    proc = VP()
    lo, hi = edm_sigma_range(proc)
    s = make_scheduler("d:unipc_bh2_o2_karras", proc, lo, hi, 8)
    assert float(s.sigmas[0]) == pytest.approx(hi, rel=1e-4) and float(s.sigmas[-2]) == pytest.approx(lo, rel=1e-3)
    assert float(s.sigmas[-1]) == 0.0 and len(s.timesteps) == 8


def test_checkpoints_command_rejects_unknown_names(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import checkpoints

    args = argparse.Namespace(only="toy2d_vq", cache=str(tmp_path), toy_steps=None, digits_steps=None, force=False)
    assert checkpoints.main(args) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown network(s) toy2d_vq — allowed: toy2d_vp")
    assert not any(tmp_path.iterdir())  # nothing written


def test_quality_rejects_bad_budgets_before_any_work(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import quality_cli

    ap = argparse.ArgumentParser()
    quality_cli.add_arguments(ap)
    for bad in (["--budgets", "5,x"], ["--budgets", "0,5"], ["--n", "1"], ["--targets", "image65"], ["--jobs", "0"],
                ["--samplers", "unipc@kerras"]):
        with pytest.raises(SystemExit) as err:
            quality_cli.config_from_args(ap.parse_args(bad + ["--out-dir", str(tmp_path)]))
        assert err.value.code == 2
        line = capsys.readouterr().err
        assert line.startswith("error: quality --") and " — " in line and line.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_digits_fd_separates_real_digits_from_noise() -> None:
    """fd_digits of held-out real digits is small next to that of uniform noise, each with a positive bootstrap SE.

    Real validation-split digits vs the training reference: only the finite-sample bias of a 64-feature Fréchet distance
    (~ trace terms / n, well under 5 at n = 300); noise lands far outside the digit manifold (measured > 50).
    """
    from benchmarks.digits_metric import DigitsFD
    from fastdiff.metrics.features import LABELED_DATA

    fd = DigitsFD(boot=10)
    real, _ = LABELED_DATA["digits"]("val")
    noise = torch.rand(300, *fd.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    (v_real, se_real), (v_noise, se_noise) = fd(real[:300]), fd(noise)
    assert se_real > 0 and se_noise > 0
    assert v_noise - v_real > 2 * math.hypot(se_real, se_noise)
    assert v_real < 0.2 * v_noise


@pytest.mark.skipif(not diffusers_present, reason="diffusers not installed (benchmarks/setup_peers.sh)")
def test_diffusers_deis_ends_at_the_smallest_sigma_without_a_denoise() -> None:
    """What peers_diffusers documents: DEIS's Karras sigmas end with lo twice (a no-op last step), UniPC's with 0."""
    from benchmarks.peers_diffusers import make_scheduler
    from fastdiff.samplers.grids import edm_sigma_range

    proc = VE()
    lo, hi = edm_sigma_range(proc)
    deis = make_scheduler("d:deis_3_karras", proc, lo, hi, 6).sigmas.double()
    unipc = make_scheduler("d:unipc_bh2_o2_karras", proc, lo, hi, 6).sigmas.double()
    # float32 sigmas from a float32 cumprod of 1000 betas: relative error ~1e-3 at most (measured 1.3e-4 on VE)
    assert float(deis[-1]) == float(deis[-2]) == pytest.approx(lo, rel=1e-3)
    assert float(unipc[-1]) == 0.0 and float(unipc[-2]) == pytest.approx(lo, rel=1e-3)
