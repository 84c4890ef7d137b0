"""benchmarks: the quality machinery on a tiny configuration, NFE accounting, peers skipped or checked."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from benchmarks import optional, peers
from benchmarks.biased import BiasedScore, perturbed
from benchmarks.noise import BatchNoise
from benchmarks.quality import QualityConfig, SlicedW1, run_quality
from benchmarks.report import assemble
from benchmarks.specs import RunSpec, build_sampler, our_specs
from benchmarks.tables import bucket, quality_markdown, verdict
from fastdiff.metrics.toy import sliced_wasserstein
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.samplers import get_sampler

TINY = QualityConfig(n=48, budgets=(10, 20), processes=("vp",), targets=("rings2d",), scenarios=("exact",),
                     samplers=["edm_heun", "euler_maruyama"], peers=False, n_ref=2000, ref_nfe=39)


@pytest.fixture
def no_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make k_diffusion, torchsde, diffusers and torchdiffeq unimportable, whatever the environment has."""
    for name in ("k_diffusion", "k_diffusion.sampling", "k_diffusion.utils", "torchsde", "diffusers", "torchdiffeq"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(peers, "_CACHE", {})
    monkeypatch.setattr(optional, "_CACHE", {})


def test_tiny_quality_run_rows_and_nfe_accounting() -> None:
    res = run_quality(TINY)
    assert [p.key for p in res.problems] == ["vp/rings2d/exact"]
    got = sorted((r.label, r.budget) for r in res.rows)
    assert got == [("edm_heun", 10), ("edm_heun", 20), ("euler_maruyama", 10), ("euler_maruyama", 20)]
    expected_nfe = {("edm_heun", 10): 9, ("edm_heun", 20): 19, ("euler_maruyama", 10): 10, ("euler_maruyama", 20): 20}
    for r in res.rows:
        assert r.status == "ok", r.status
        # the benchmark's own score wrapper == the sampler's CountedScore == its declared nfe_for(steps)
        assert r.nfe == r.nfe_sampler == r.nfe_declared == expected_nfe[(r.label, r.budget)]
        assert r.sw is not None and math.isfinite(r.sw) and r.sw > 0
        assert r.gap is not None and r.gap_se is not None and r.gap_se > 0
        # pathwise error only for the deterministic solver (euler_maruyama is stochastic)
        assert (r.path is not None) == (r.label == "edm_heun")
    text = quality_markdown(res, TINY, "python -m benchmarks quality --tiny")
    table = [ln for ln in text.splitlines() if ln.startswith("| edm_heun |") or ln.startswith("| euler_maruyama |")]
    assert len(table) == 3 and all(ln.count("|") == len(TINY.budgets) + 3 for ln in table)  # gap x2, path x1
    assert "| sampler | 10 | 20 | s |" in text
    assert "NFE accounting: 4 completed runs" in text and "Mismatches" not in text


def test_adaptive_runs_are_counted_and_bucketed() -> None:
    specs = [s for s in our_specs(VP(), (10, 20, 50), ["ggf"], ggf_eps_rel=(0.5,))]
    assert specs == [RunSpec("fastdiff", "ggf", tol=0.5)] and specs[0].options["max_nfe"] == 50
    cfg = QualityConfig(n=32, budgets=(10, 20, 50), processes=("vp",), targets=("rings2d",), scenarios=("exact",),
                        samplers=["ggf"], peers=False, ggf_eps_rel=(0.5,), n_ref=2000)
    (row,) = run_quality(cfg).rows
    assert row.status == "ok" and row.nfe_declared is None
    assert row.nfe == pytest.approx(row.nfe_sampler) and 3 <= row.nfe <= 50
    assert bucket(row.nfe, cfg.budgets) == next(b for b in cfg.budgets if row.nfe <= b)


def test_budgets_below_a_samplers_minimum_are_left_out() -> None:
    budgets = (10, 20)
    specs = our_specs(VP(), budgets, ["restart", "edm_euler"])
    minimum = get_sampler("restart").min_nfe
    assert {s.budget for s in specs if s.method == "restart"} == {b for b in budgets if b >= minimum}
    assert {s.budget for s in specs if s.method == "edm_euler"} == set(budgets)
    assert not [s for s in our_specs(VE(), budgets) if s.method in ("sps", "bao", "sscs")]  # PSLD-only


def test_cached_sliced_w1_equals_the_metric_module() -> None:
    g = torch.Generator().manual_seed(1)
    ref, x = torch.randn(720, 3, generator=g, dtype=torch.float64), 1.3 * torch.randn(90, 3, generator=g) + 0.2
    want = sliced_wasserstein(x, ref, n_proj=64, p=1.0, seed=5).item()
    assert SlicedW1(ref, 90, n_proj=64, seed=5)(x) == pytest.approx(want, rel=1e-5)  # float32 differences
    with pytest.raises(ValueError, match="set up for 90 samples"):
        SlicedW1(ref, 90)(x[:10])
    with pytest.raises(ValueError, match="multiple of n = 100"):
        SlicedW1(ref, 100)


def test_bucket_and_verdict() -> None:
    assert bucket(9, (10, 20)) == 10 and bucket(10, (10, 20)) == 10 and bucket(10.5, (10, 20)) == 20
    assert bucket(21, (10, 20)) is None and bucket(None, (10,)) is None
    assert verdict(-0.21, 0.1) == "won" and verdict(0.21, 0.1) == "lost"
    assert verdict(-0.2, 0.1) == "tie" and verdict(0.19, 0.1) == "tie"  # exactly 2 SE is not beyond it


def test_peers_are_skipped_cleanly_when_not_importable(no_peers: None) -> None:
    assert peers.k_sampling() is None and peers.torchsde_module() is None
    assert peers.missing_peers() == ["k-diffusion", "torchsde", "diffusers", "torchdiffeq"]
    assert peers.peer_specs(VP(), (10, 20)) == [] and peers.peer_specs(PSLD(), (10, 20)) == []
    cfg = QualityConfig(**{**TINY.__dict__, "peers": True, "samplers": ["edm_euler"], "budgets": (10,)})
    res = run_quality(cfg)
    assert res.missing_peers == ["k-diffusion", "torchsde", "diffusers", "torchdiffeq"]
    assert [r.family for r in res.rows] == ["fastdiff"]
    text = quality_markdown(res, cfg, "cmd")
    assert "peers not installed (see benchmarks/setup_peers.sh)" in text
    assert "`edm_euler`" in text and "| — | | |" in text  # headline cell: ours, no peer, no verdict


def test_biased_score_is_exact_below_sigma_b_and_wrong_above() -> None:
    mix = GaussianMixture.ring(4, 1.0, 0.2)
    wrong = perturbed(mix, 1.0, 2.0, 1.5)
    for proc in (VP(), PSLD()):
        score = BiasedScore(mix, wrong, proc, sigma_b=0.3)
        z = torch.randn(6, 2 * proc.k, dtype=torch.float64)
        t_lo, t_hi = torch.full((6,), 0.01, dtype=torch.float64), torch.full((6,), 0.9, dtype=torch.float64)
        assert torch.allclose(score(z, t_lo), mix.score(proc, z, t_lo))
        assert torch.allclose(score(z, t_hi), wrong.score(proc, z, t_hi))
        mixed = torch.where(torch.arange(6) % 2 == 0, t_lo, t_hi)
        want = torch.where((torch.arange(6) % 2 == 0)[:, None], mix.score(proc, z, mixed), wrong.score(proc, z, mixed))
        assert torch.allclose(score(z, mixed), want)


def test_batch_noise_shapes_and_reproducibility() -> None:
    a, b = BatchNoise(range(5), base_seed=3), BatchNoise(range(5), base_seed=3)
    assert torch.equal(a.randn((2,)), b.randn((2,)))
    assert a.randn((3,), idx=torch.tensor([0, 4])).shape == (2, 3)
    assert a.rand((1,)).shape == (5, 1) and a.randn((2,), dtype=torch.float64).dtype == torch.float64


def test_report_orders_sections_and_fixes_links(tmp_path) -> None:
    res = tmp_path / "benchmarks" / "results"
    res.mkdir(parents=True)
    for name in ("zeta", "ggf", "speed", "restart", "quality", "frontier"):
        (res / f"{name}.md").write_text(f"## {name}\n\n![plot]({name}.png) [csv]({name}.csv) [web](https://x.y/z)\n")
    (res / "splitting.md").write_text("# splitting\n\n## sub\n")
    text = assemble(res, tmp_path)
    heads = [ln.split()[1] for ln in text.splitlines() if ln.startswith("## ") and len(ln.split()) == 2]
    assert heads == ["frontier", "quality", "speed", "restart", "ggf", "splitting", "zeta"]
    assert "![plot](benchmarks/results/quality.png)" in text and "(https://x.y/z)" in text
    assert "### sub" in text  # a section opening with '# ' is demoted one level


k_diffusion_present = peers.k_sampling() is not None


@pytest.mark.skipif(not k_diffusion_present, reason="k-diffusion not installed (benchmarks/setup_peers.sh)")
@pytest.mark.parametrize("ours, theirs", [("edm_heun", "k:heun"), ("edm_euler", "k:euler"),
                                          ("dpmpp_2m", "k:dpmpp_2m")])
def test_k_diffusion_adapter_reproduces_the_same_algorithm(ours: str, theirs: str) -> None:
    mix, proc, n = GaussianMixture.ring(8, 1.0, 0.1), VP(), 64
    score = mix.score_fn(proc)
    x_ours = get_sampler(ours, nfe=19).sample(score, proc, (n, 2), noise=BatchNoise(range(n))).x
    res = peers.run_peer(RunSpec("peer", theirs, budget=19), score, proc, (n, 2), BatchNoise(range(n)))
    assert res.nfe == res.nfe_declared == get_sampler(ours, nfe=19).nfe
    assert torch.allclose(x_ours, res.x, atol=1e-4)


@pytest.mark.skipif(peers.torchsde_module() is None, reason="torchsde not installed (benchmarks/setup_peers.sh)")
def test_torchsde_adapter_samples_the_target() -> None:
    mix, n = GaussianMixture.gaussian([0.5, -1.0], [[0.09, 0.0], [0.0, 0.04]]), 400
    for proc in (VP(), PSLD()):
        res = peers.run_peer(RunSpec("peer", "torchsde:srk", tol=0.1), mix.score_fn(proc), proc, (n, 2),
                             BatchNoise(range(n)))
        assert res.nfe > 2 and res.nfe_declared is None
        assert torch.allclose(res.x.mean(0), torch.tensor([0.5, -1.0]), atol=0.06)
        assert torch.allclose(res.x.std(0), torch.tensor([0.3, 0.2]), rtol=0.15)


def test_probe_parses_specs_and_rejects_wrong_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.probe import main, parse_spec

    assert parse_spec("ours:exp_ode,t_eps=1e-4,order=2") == ("fastdiff", "exp_ode", {"t_eps": 1e-4, "order": 2})
    assert parse_spec("peer:d:deis_3_karras") == ("peer", "d:deis_3_karras", {})
    assert main(["vp/rings2d"]) == 2 and "probe.py" in capsys.readouterr().err


def test_edm_view_samplers_off_karras_also_run_on_the_karras_grid() -> None:
    """The benchmark runs ours on the same two schedules the peers get: default and Karras (``karras_variant``)."""
    specs = our_specs(VP(), (10,), ["unipc", "dpmpp_2m", "exp_ode"])
    assert [(s.label, s.options.get("grid")) for s in specs] == [
        ("unipc", None), ("unipc@karras", "karras"), ("dpmpp_2m", None), ("exp_ode", None)]
    assert build_sampler(specs[1]).options.grid == "karras" and build_sampler(specs[0]).options.grid == "logsnr"
    assert len(our_specs(VP(), (10,), ["unipc"], variants=False)) == 1
    only = our_specs(VP(), (10,), ["unipc@karras", "dpmpp_2m@karras"])  # dpmpp_2m is on Karras already: no variant
    assert [s.label for s in only] == ["unipc@karras"]
