"""Restart sampling (Xu et al. 2023): NFE accounting, edm_heun parity, snapping, jump noise, contraction, PSLD."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.samplers import NoiseSource, SamplerError, get_sampler
from fastdiff.samplers.restart import PRESETS

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
MIX = GaussianMixture.gaussian([0.5, -0.3], [[0.3, 0.1], [0.1, 0.2]])

# (N_main, intervals, NFE) as published (DESIGN.md section 4)
PAPER = [(18, [[3, 2, 0.06, 0.30]], 43), (18, [[3, 5, 0.06, 0.30]], 55), (18, [[3, 10, 0.06, 0.30]], 75),
         (18, [[3, 20, 0.06, 0.30]], 115), (20, [[9, 30, 0.06, 0.20]], 519)]


def zero_score(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(z)


class ShiftedGaussianScore:
    """Exact score of data N(mu, s^2 I) for sigma(t) <= sigma_b and of N(mu + delta, s^2 I) above (VE/VP)."""

    def __init__(self, process, mu: float, s: float, delta: float, sigma_b: float) -> None:
        self.process, self.mu, self.s, self.delta, self.sigma_b = process, mu, s, delta, sigma_b

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sig, a = self.process.sigma(t)[:, None], self.process.scale(t)[:, None]
        m = self.mu + self.delta * (sig > self.sigma_b * (1 + 1e-12)).double()
        return (-(z - a * m) / (a**2 * (self.s**2 + sig**2))).to(z.dtype)


# ---- NFE accounting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_main,intervals,nfe", PAPER)
def test_counted_nfe_matches_formula_for_paper_configs(n_main, intervals, nfe):
    formula = (2 * n_main - 1) + sum(int(k) * 2 * (int(n) - 1) for n, k, _, _ in intervals)
    assert formula == nfe
    sampler = get_sampler("restart", steps=n_main, intervals=intervals)
    assert sampler.nfe == nfe
    res = sampler.sample(MIX.score_fn(VP()), VP(), (2, 2), seeds=[0, 1])
    assert res.nfe == nfe and (res.nfe_per_sample == nfe).all()
    assert get_sampler("restart", nfe=nfe, intervals=intervals).steps == n_main  # the budget recovers N_main


def test_presets_match_paper_and_yaml():
    expected = {"vp_43": 43, "vp_55": 55, "vp_75": 75, "vp_115": 115, "vp_519": 519, "edm_43": 43}
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/samplers/restart.yaml"))
    yaml = cfg["presets"]
    assert set(yaml) == set(PRESETS) == set(expected)
    published = {"restart_gamma": 0.05, "S_min": 0.01, "S_max": 1.0, "S_noise": 1.0}  # the authors' CIFAR-10 runs
    assert cfg["churn"] == published
    for name, nfe in expected.items():
        s = get_sampler("restart", preset=name)
        assert {k: getattr(s.options, k) for k in published} == published
        assert s.nfe == nfe == yaml[name]["nfe"]
        assert s.steps == PRESETS[name][0] == yaml[name]["steps"]
        assert [[iv.n_restart, iv.k, iv.t_min, iv.t_max] for iv in s.intervals] == yaml[name]["intervals"]
    assert get_sampler("restart", preset="edm_43").intervals[0].t_min == 0.14


def test_budget_picks_largest_main_pass_and_reports_minimum():
    assert get_sampler("restart", nfe=43).steps == 18  # default interval [3, 2, 0.06, 0.30]
    assert get_sampler("restart", nfe=44).steps == 18 and get_sampler("restart", nfe=45).steps == 19
    with pytest.raises(SamplerError, match="minimum 11 .*8 for the restart intervals"):
        get_sampler("restart", nfe=10)
    with pytest.raises(SamplerError, match="minimum 483"):
        get_sampler("restart", nfe=400, intervals=[[9, 30, 0.06, 0.20]])
    assert get_sampler("restart", nfe=3, intervals=[]).steps == 2


# ---- edm_heun parity and snapping ------------------------------------------------------------------------
@pytest.mark.parametrize("process", [VP(), VE(sigma_min=0.01, sigma_max=5.0)], ids=["vp", "ve"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_intervals_reproduces_edm_heun_bit_for_bit(process, dtype):
    score = GaussianMixture.ring(4, 1.0, 0.2).score_fn(process)
    seeds = list(range(7))
    ref = get_sampler("edm_heun", steps=12, dtype=dtype).sample(score, process, (7, 2), seeds=seeds)
    res = get_sampler("restart", steps=12, intervals=[], dtype=dtype).sample(score, process, (7, 2), seeds=seeds)
    assert torch.equal(res.state, ref.state) and res.nfe == ref.nfe == 23


def test_snapping_on_the_paper_grid():
    # our VP covers sigma in [0.001, 152] on [t_eps_train, 1], so clipping keeps the paper's [0.002, 80]
    lo, hi = VP().sigma_range()
    assert lo < 0.002 and hi > 80
    i = torch.arange(18, dtype=torch.float64)
    paper = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # Karras et al. eq. (5)
    sampler = get_sampler("restart", steps=18, sigma_min=0.002, sigma_max=80.0,
                          intervals=[[3, 2, 0.06, 0.30], [4, 1, 0.30, 0.9]])
    torch.testing.assert_close(sampler.main_grid(VP())[:-1], paper, rtol=1e-12, atol=0)
    plan = sampler.restart_plan(VP())
    assert sorted(plan) == [12, 14]
    assert plan[14].t_min == pytest.approx(0.059947, abs=1e-6) and plan[14].t_min == paper[14].item()
    assert plan[12].t_min == pytest.approx(0.29644, abs=1e-5)  # 0.30 snaps (as t_min) to 0.2964 ...
    assert plan[14].grid[0].item() == 0.30 and plan[14].grid[-1].item() == plan[14].t_min  # ... t_max does not
    g = plan[14].grid  # descent: Karras in sigma with the sampler's rho
    mid = ((0.30 ** (1 / 7) + plan[14].t_min ** (1 / 7)) / 2) ** 7
    assert len(g) == 3 and g[1].item() == pytest.approx(mid, rel=1e-12)


def test_colliding_or_empty_intervals_are_errors():
    s = get_sampler("restart", steps=18, intervals=[[3, 1, 0.06, 0.3], [3, 1, 0.065, 0.4]])
    with pytest.raises(SamplerError, match="both snap"):
        s.sample(MIX.score_fn(VP()), VP(), (2, 2), seeds=[0, 1])
    s = get_sampler("restart", steps=18, intervals=[[3, 1, 0.28, 0.29]])  # 0.28 snaps to 0.2964 >= t_max
    with pytest.raises(SamplerError, match="must exceed"):
        s.restart_plan(VP())


@pytest.mark.parametrize("bad,match", [
    ([[1, 2, 0.06, 0.3]], "N_restart must be an integer >= 2"), ([[2.5, 2, 0.06, 0.3]], "N_restart"),
    ([[3, 0, 0.06, 0.3]], "K must be an integer >= 1"), ([[3, 1.5, 0.06, 0.3]], "K must"),
    ([[3, 2, 0.3, 0.06]], "t_min < t_max"), ([[3, 2, 0.0, 0.3]], "t_min < t_max"),
    ([[3, 2, 0.06]], r"expected \[N_restart, K, t_min, t_max\]")])
def test_bad_intervals(bad, match):
    with pytest.raises(SamplerError, match=match):
        get_sampler("restart", steps=18, intervals=bad)


def test_preset_contradictions_and_round_trip():
    assert get_sampler("restart", preset="vp_55", nfe=55).steps == 18
    assert get_sampler("restart", preset="vp_519", steps=20, intervals=[[9, 30, 0.06, 0.2]]).nfe == 519
    for kwargs, match in [({"nfe": 50}, "fixes NFE = 43"), ({"steps": 20}, "fixes steps"),
                          ({"restart_gamma": 0.0}, "fixes the published restart_gamma=0.05"),
                          ({"S_noise": 1.003}, "fixes the published S_noise=1.0"),
                          ({"intervals": [[3, 3, 0.06, 0.3]]}, "fixes intervals"), ({"space": "t"}, "sigma view")]:
        with pytest.raises(SamplerError, match=match):
            get_sampler("restart", preset="vp_43", **kwargs)
    with pytest.raises(SamplerError, match="unknown preset 'vp_44'; allowed: vp_43"):
        get_sampler("restart", preset="vp_44")
    with pytest.raises(SamplerError, match="sigma units"):
        get_sampler("restart", preset="vp_43").sample(MIX.score_fn(PSLD()), PSLD(), (2, 2), seeds=[0, 1])
    with pytest.raises(SamplerError, match="space='sigma' needs an EDM-view process"):
        get_sampler("restart", nfe=43, space="sigma").restart_plan(PSLD())
    for kw in [{"preset": "vp_519"}, {"nfe": 60, "intervals": [[4, 2, 0.1, 0.5], [2, 1, 1.0, 2.0]], "S_noise": 1.01},
               {"steps": 30, "space": "t", "grid": "quadratic", "restart_gamma": 0.05, "final_denoise": False}]:
        cfg = get_sampler("restart", **kw).config()
        assert get_sampler(**cfg).config() == cfg
    assert get_sampler("restart", nfe=60, intervals=[[4.0, 2.0, 0.1, 0.5]]).config()["intervals"] == [[4, 2, 0.1, 0.5]]


# ---- the forward jump ----------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["sigma", "t"])
@pytest.mark.parametrize("s_noise,k", [(1.0, 1), (0.7, 3)])
def test_forward_jump_noise_variance(space, s_noise, k):
    """Zero score on VE: the ODE does not move x, so x_out - sigma_max * eps_0 is the sum of K jumps."""
    process, n, d = VE(sigma_min=0.002, sigma_max=80.0), 1500, 32
    iv = [[2, k, 0.06, 0.30]] if space == "sigma" else [[2, k, 0.3, 0.6]]  # t-space bounds are times
    sampler = get_sampler("restart", steps=18, intervals=iv, S_noise=s_noise, space=space, dtype="float64")
    res = sampler.sample(zero_score, process, (n, d), seeds=range(n))
    (p,) = sampler.restart_plan(process).values()
    eps0 = NoiseSource(range(n)).randn((d,), dtype=torch.float64)
    start = float(sampler.main_grid(process)[0]) if space == "sigma" else 80.0  # sigma_0 / prior std
    jumps = res.x.double() - start * eps0
    if space == "sigma":
        var = s_noise**2 * (0.30**2 - p.t_min**2)
    else:
        sig = process.sigma(torch.tensor([0.6, p.t_min], dtype=torch.float64))
        var = s_noise**2 * (sig[0] ** 2 - sig[1] ** 2).item()
    assert p.t_min != iv[0][2]  # the jump starts from the snapped t_min
    assert jumps.var().item() == pytest.approx(k * var, rel=0.03)
    assert abs(jumps.mean().item()) < 4 * math.sqrt(k * var / jumps.numel())


# ---- contraction ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("process,space", [(VE(sigma_min=0.002, sigma_max=80.0), "sigma"), (VP(), "sigma"),
                                           (VE(sigma_min=0.002, sigma_max=80.0), "t")], ids=["ve", "vp", "ve-t"])
def test_each_restart_contracts_a_planted_mean_offset(process, space):
    """Biased score above t_max plants an offset; each restart multiplies it by sqrt((s^2+t_min^2)/(s^2+t_max^2))."""
    s, mu, delta, n, d = 0.5, 0.3, 1.0, 2000, 4
    if space == "sigma":
        lo, hi = 0.06, 0.30
    else:
        lo, hi = (process.t_of_sigma(torch.tensor(v, dtype=torch.float64)).item() for v in (0.06, 0.30))
    sig_b = 0.30
    biased, exact = ShiftedGaussianScore(process, mu, s, delta, sig_b), ShiftedGaussianScore(process, mu, s, 0.0, sig_b)
    seeds = range(n)
    diffs, offsets = [], []
    for k in range(4):
        iv = [[40, k, lo, hi]] if k else []
        sampler = get_sampler("restart", steps=18, intervals=iv, space=space, dtype="float64")
        xb = sampler.sample(biased, process, (n, d), seeds=seeds).x.double()
        xe = sampler.sample(exact, process, (n, d), seeds=seeds).x.double()
        diffs.append(xb - xe)  # affine maps: a deterministic vector, identical for every sample
        offsets.append(xb.mean().item() - mu)
        if k:
            (p,) = sampler.restart_plan(process).values()
            t_min = p.t_min if space == "sigma" else process.sigma(torch.tensor(p.t_min, dtype=torch.float64)).item()
    factor = math.sqrt((s**2 + t_min**2) / (s**2 + 0.30**2))
    assert diffs[0].abs().min() > 0.5  # a real offset was planted
    for k in range(1, 4):
        ratio = diffs[k] / diffs[0]
        assert ratio.std() < 1e-6
        assert ratio.mean().item() == pytest.approx(factor**k, rel=2e-4)
        assert offsets[k] / offsets[0] == pytest.approx(factor**k, abs=0.02)  # also through the noisy means


# ---- churn, final_denoise -------------------------------------------------------------------------------
def sample_mix(process, n: int = 6, **kw):
    return get_sampler("restart", **kw).sample(MIX.score_fn(process), process, (n, 2), seeds=range(n))


def test_churn_only_inside_its_sigma_range():
    process = VP()
    base, on = sample_mix(process, nfe=43), sample_mix(process, nfe=43, restart_gamma=0.05)
    off = sample_mix(process, nfe=43, restart_gamma=0.05, S_min=1.0, S_max=2.0)
    assert torch.equal(off.state, base.state)
    assert on.nfe == base.nfe == 43 and not torch.allclose(on.x, base.x)
    plan = get_sampler("restart", nfe=43, restart_gamma=0.05).restart_plan(process)
    (p,) = plan.values()
    torch.testing.assert_close(p.churn[:-1], 1.05 * p.grid[:-1], rtol=1e-14, atol=0)


def test_t_space_churn_raises_sigma_eff_by_one_plus_gamma():
    from fastdiff.samplers.restart import sigma_eff

    process = PSLD()
    sampler = get_sampler("restart", steps=30, restart_gamma=0.1, S_min=0.0, S_max=10.0)
    (p,) = sampler.restart_plan(process).values()
    raised, level = sigma_eff(process, p.churn[:-1]), sigma_eff(process, p.grid[:-1])
    torch.testing.assert_close(raised, 1.1 * level, rtol=1e-6, atol=0)
    base, on = sample_mix(process, steps=30), sample_mix(process, steps=30, restart_gamma=0.1, S_min=0.0, S_max=10.0)
    assert on.nfe == base.nfe == sampler.nfe and not torch.allclose(on.x, base.x)


@pytest.mark.parametrize("process", [VP(), VE(sigma_min=0.01, sigma_max=5.0)], ids=["vp", "ve"])
def test_final_denoise_off_stops_one_tweedie_step_early(process):
    score, seeds = MIX.score_fn(process), range(5)
    full = get_sampler("restart", steps=10, dtype="float64").sample(score, process, (5, 2), seeds=seeds)
    sampler = get_sampler("restart", steps=10, dtype="float64", final_denoise=False)
    early = sampler.sample(score, process, (5, 2), seeds=seeds)
    assert early.nfe == full.nfe - 1 == sampler.nfe
    t_end = process.t_of_sigma(sampler.main_grid(process)[-2])
    torch.testing.assert_close(process.denoise(early.state, t_end, score(early.state, t_end)), full.state)


# ---- PSLD (t-space variant) ------------------------------------------------------------------------------
def test_psld_restart_matches_gaussian_target():
    process, n = PSLD(), 3000
    sampler = get_sampler("restart", steps=30, dtype="float64")  # default interval mapped to t via log-SNR
    a = sampler.sample(MIX.score_fn(process), process, (n, 2), seeds=range(n))
    b = sampler.sample(MIX.score_fn(process), process, (n, 2), seeds=range(n))
    assert torch.equal(a.state, b.state) and a.state.shape == (n, 4)
    assert a.nfe == sampler.nfe == 67 and a.info["space"] == "t" and len(a.info["restarts"]) == 1
    r = a.info["restarts"][0]
    assert 0.001 < r["t_min"] < r["t_max"] < 0.1
    torch.testing.assert_close(a.x.double().mean(0), MIX.mean(), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(a.x.double().T), MIX.cov(), atol=0.03, rtol=0)
    with pytest.raises(SamplerError, match="exceeds the process horizon"):
        get_sampler("restart", steps=30, intervals=[[3, 1, 0.05, 1.5]]).sample(
            MIX.score_fn(process), process, (2, 2), seeds=[0, 1])


def test_preset_churns_inside_the_restart_steps_as_published():
    """vp_43 on VP: churn 1.05 sigma at every descent step start with sigma in [0.01, 1] (all of [0.06, 0.30])."""
    (p,) = get_sampler("restart", preset="vp_43").restart_plan(VP()).values()
    torch.testing.assert_close(p.churn[:-1], 1.05 * p.grid[:-1], rtol=1e-14, atol=0)
    assert p.churn[-1] == p.grid[-1]


def test_the_factory_runs_one_of_two_separate_samplers():
    """restart = RestartSigma on EDM-view processes, RestartT otherwise; each alone gives the factory's output."""
    from fastdiff.samplers.restart_sigma import RestartSigma
    from fastdiff.samplers.restart_t import RestartT

    assert not issubclass(RestartSigma, RestartT) and not issubclass(RestartT, RestartSigma)
    for process, cls, kw in [(VP(), RestartSigma, {}), (PSLD(), RestartT, {}), (VP(), RestartT, {"space": "t"})]:
        s = get_sampler("restart", steps=12, dtype="float64", **kw)
        assert type(s.variant(process)) is cls
        score = MIX.score_fn(process)
        alone = cls(steps=12, dtype="float64").sample(score, process, (4, 2), seeds=range(4))
        via = s.sample(score, process, (4, 2), seeds=range(4))
        assert torch.equal(alone.state, via.state) and alone.nfe == via.nfe == s.nfe
