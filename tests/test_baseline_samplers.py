"""Golden checks of the baseline samplers (pc, ode_euler, ode_heun, edm_sde, dpmpp_2m, and the EDM ODE samplers).

References are computed independently of the sampler code: closed-form probability-flow solutions for Gaussian
data, hand-written single steps that re-draw each seed's noise from its own ``torch.Generator``, and the
published NFE formulas.
"""
from __future__ import annotations

import math

import pytest
import torch

from fastdiff.processes import PSLD, VE, VP
from fastdiff.samplers import SamplerError, get_sampler
from gaussian_reference import GAUSS, draws, edm_range, exact_denoiser, first_draws, gaussian_score, karras

PROCESSES = {"ve": lambda: VE(sigma_min=0.01, sigma_max=5.0), "vp": VP, "psld": PSLD}
SEEDS = list(range(16))


def run(name: str, process, seeds=SEEDS, score=None, **kw):
    sampler = get_sampler(name, dtype="float64", **kw)
    return sampler.sample(score or GAUSS.score_fn(process), process, (len(seeds), 2), seeds=seeds)


# ---- deterministic samplers (their convergence order: test_sampler_convergence.py) -----------------------
def test_final_denoise_is_tweedie_of_the_last_state():
    process = PROCESSES["vp"]()
    a = run("ode_heun", process, steps=6, final_denoise=False).state
    b = run("ode_heun", process, steps=6).state
    te = process.t_eps_sample
    s, sig = float(process.scale(torch.tensor([te]))), float(process.sigma(torch.tensor([te])))
    torch.testing.assert_close(b, exact_denoiser(a / s, sig), atol=1e-10, rtol=0)


def test_dpmpp_2m_matches_the_published_update():
    """Lu et al. 2022 (DPM-Solver++(2M)) in sigma form with the exact denoiser, written out by hand."""
    process = PROCESSES["vp"]()
    lo, hi = edm_range(process)
    sig = karras(5, lo, hi) + [0.0]
    x = first_draws(SEEDS, (2,)) * sig[0]
    d_old, h_old = None, None
    for i in range(5):
        d = exact_denoiser(x, sig[i])
        if sig[i + 1] == 0:
            x = d
            break
        h = math.log(sig[i]) - math.log(sig[i + 1])  # lambda = -log sigma
        if d_old is None:
            d_use = d
        else:
            r = h_old / h
            d_use = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_old
        x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * d_use
        d_old, h_old = d, h
    res = run("dpmpp_2m", process, steps=5)
    assert res.nfe == 5
    torch.testing.assert_close(res.state, x, atol=1e-9, rtol=0)


# ---- edm_sde ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pname", ["ve", "vp"])
def test_edm_sde_without_churn_is_edm_heun(pname):
    process = PROCESSES[pname]()
    a = run("edm_sde", process, steps=7, S_churn=0.0)
    b = run("edm_heun", process, steps=7)
    assert torch.equal(a.state, b.state) and a.nfe == b.nfe == 13


def test_edm_sde_churn_is_capped_at_the_trained_sigma_max():
    """Churn at the top of the VE range would leave the trained range: sigma_hat is capped, so no noise is added."""
    process = PROCESSES["ve"]()  # sigma_max 5 < 80: the grid starts at 5
    a = run("edm_sde", process, steps=5, S_churn=40.0, S_min=4.9, S_max=5.1, sigma_hat_cap="clamp")
    b = run("edm_heun", process, steps=5)
    assert torch.equal(a.state, b.state)


def test_edm_sde_matches_algorithm_2_by_hand():
    """Two steps of Karras et al. 2022 Alg. 2 with the exact denoiser and each seed's own noise stream."""
    process = PROCESSES["vp"]()
    opts = dict(S_churn=0.6, S_min=0.001, S_max=100.0, S_noise=1.01, sigma_max=2.0)
    sig = karras(2, edm_range(process)[0], 2.0) + [0.0]
    gamma = min(0.6 / 2, math.sqrt(2) - 1)
    out = []
    for seed in SEEDS[:4]:
        n0, xi0, xi1 = draws(seed, (2,), 3)
        x = n0[None] * sig[0]
        for i, xi in enumerate((xi0, xi1)):
            s_hat = sig[i] * (1 + gamma)
            x_hat = x + 1.01 * math.sqrt(s_hat**2 - sig[i] ** 2) * xi[None]
            d = (x_hat - exact_denoiser(x_hat, s_hat)) / s_hat
            x = x_hat + (sig[i + 1] - s_hat) * d
            if sig[i + 1] > 0:
                d2 = (x - exact_denoiser(x, sig[i + 1])) / sig[i + 1]
                x = x_hat + (sig[i + 1] - s_hat) * 0.5 * (d + d2)
        out.append(x[0])
    res = run("edm_sde", process, seeds=SEEDS[:4], steps=2, **opts)
    assert res.nfe == 3
    torch.testing.assert_close(res.state, torch.stack(out), atol=1e-9, rtol=0)


# ---- predictor-corrector --------------------------------------------------------------------------------
def test_pc_snr_default_per_process():
    sampler = get_sampler("pc", steps=3)
    assert sampler.snr_for(PROCESSES["ve"]()) == 0.16
    assert sampler.snr_for(PROCESSES["vp"]()) == 0.01
    assert sampler.snr_for(PROCESSES["psld"]()) == 0.01
    assert get_sampler("pc", steps=3, snr=0.3).snr_for(PROCESSES["ve"]()) == 0.3
    ve = PROCESSES["ve"]()
    default = run("pc", ve, steps=4).state
    assert torch.equal(default, run("pc", ve, steps=4, snr=0.16).state)
    assert not torch.allclose(default, run("pc", ve, steps=4, snr=0.01).state)


@pytest.mark.parametrize("pname", ["ve", "vp"])
@pytest.mark.parametrize("corrector_first", [False, True])
def test_pc_one_step_by_hand(pname, corrector_first):
    """Reverse-diffusion predictor (Song et al. 2021, Eq. 47) + one Langevin step (Alg. 4), per sample."""
    process = PROCESSES[pname]()
    T, te = process.T, process.t_eps_sample
    if pname == "ve":
        sig = lambda t: process.sigma_min * (process.sigma_max / process.sigma_min) ** t  # noqa: E731
        A, Q, prior_std = 1.0, sig(T) ** 2 - sig(te) ** 2, process.sigma_max
        scale_sigma = lambda t: (1.0, sig(t))  # noqa: E731
    else:
        big_b = lambda t: process.beta_min * t + 0.5 * (process.beta_max - process.beta_min) * t**2  # noqa: E731
        A = math.exp(-0.5 * (big_b(T) - big_b(te)))
        Q, prior_std = 1 - A**2, 1.0
        scale_sigma = lambda t: (math.exp(-0.5 * big_b(t)), math.sqrt(math.expm1(big_b(t))))  # noqa: E731
    snr = 0.16 if pname == "ve" else 0.01
    out = []
    for seed in SEEDS[:5]:
        e0, xi1, xi2 = (d[None] for d in draws(seed, (2,), 3))
        z = prior_std * e0

        def corrector(z, t, xi):
            s = gaussian_score(z, *scale_sigma(t))
            eps = 2 * (snr * xi.norm() / s.norm()) ** 2
            return z + eps * s + torch.sqrt(2 * eps) * xi

        if corrector_first:
            z = corrector(z, T, xi1)
            xi1 = xi2
        z = (2 - A) * z + Q * gaussian_score(z, *scale_sigma(T)) + math.sqrt(Q) * xi1
        if not corrector_first:
            z = corrector(z, te, xi2)
        out.append(z[0])
    res = run("pc", process, seeds=SEEDS[:5], steps=1, final_denoise=False, corrector_first=corrector_first,
              step_size="per_sample")
    assert res.nfe == 2
    torch.testing.assert_close(res.state, torch.stack(out), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("pname", ["ve", "vp", "psld"])
def test_pc_with_em_predictor_and_no_corrector_is_euler_maruyama(pname):
    process = PROCESSES[pname]()
    a = run("pc", process, steps=6, n_corrector=0, predictor="euler_maruyama")
    b = run("euler_maruyama", process, steps=6)
    assert torch.equal(a.state, b.state)


def test_pc_kernel_step_size_uses_the_kernel_variance():
    """step_size='kernel' on VE: eps = 2 snr^2 sigma(t)^2 (harmonic mean of the kernel variances), no batch stats."""
    process = PROCESSES["ve"]()
    sig_te = process.sigma_min * (process.sigma_max / process.sigma_min) ** process.t_eps_sample
    sT = process.sigma_max
    out = []
    for seed in (3, 4):
        e0, xi1, xi2 = (d[None] for d in draws(seed, (2,), 3))
        q = sT**2 - sig_te**2
        z = sT * e0 + q * gaussian_score(sT * e0, 1.0, sT) + math.sqrt(q) * xi1
        eps = 2 * 0.16**2 * sig_te**2
        out.append((z + eps * gaussian_score(z, 1.0, sig_te) + math.sqrt(2 * eps) * xi2)[0])
    res = run("pc", process, seeds=[3, 4], steps=1, final_denoise=False)  # kernel is the default
    torch.testing.assert_close(res.state, torch.stack(out), atol=1e-9, rtol=1e-9)


# ---- NFE accounting ---------------------------------------------------------------------------------------
FORMULAS = {  # counted NFE per sample for `steps` (final Tweedie denoise on, where the sampler has one)
    "euler_maruyama": lambda n: n + 1,
    "pc": lambda n: 2 * n + 1,
    "ode_euler": lambda n: n + 1,
    "ode_heun": lambda n: 2 * n + 1,
    "edm_euler": lambda n: n,
    "edm_heun": lambda n: 2 * n - 1,
    "edm_sde": lambda n: 2 * n - 1,
    "dpmpp_2m": lambda n: n,
    # the fast solvers (Lu et al. 2022; Zhao et al. 2023; Zhang & Chen 2022): one evaluation per grid point, the
    # step to sigma = 0 reusing it; DPM++ 2S SDE: two per step, one on the last
    "dpmpp_3m": lambda n: n, "dpmpp_2m_sde": lambda n: n, "dpmpp_3m_sde": lambda n: n, "unipc": lambda n: n,
    "ipndm": lambda n: n, "lms": lambda n: n, "deis": lambda n: n, "dpmpp_sde": lambda n: 2 * n - 1,
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_nfe_budgets_are_honoured(name):
    process = PROCESSES["vp"]()
    for budget in (5, 6, 10, 20, 50, 100):
        sampler = get_sampler(name, nfe=budget)
        steps = sampler.steps
        assert FORMULAS[name](steps) <= budget < FORMULAS[name](steps + 1), (budget, steps)
        res = sampler.sample(GAUSS.score_fn(process), process, (2, 2), seeds=[0, 1])
        assert res.nfe == FORMULAS[name](steps)


def test_edm_heun_18_steps_is_35_nfe():
    res = run("edm_heun", PROCESSES["vp"](), seeds=[0], steps=18)
    assert res.nfe == 35 and res.calls == 35


@pytest.mark.parametrize("n_corrector", [0, 1, 3])
def test_pc_nfe_counts_predictor_corrector_and_denoise(n_corrector):
    for final_denoise in (True, False):
        res = run("pc", PROCESSES["psld"](), seeds=[0, 1], steps=5, n_corrector=n_corrector, final_denoise=final_denoise)
        assert res.nfe == 5 * (1 + n_corrector) + int(final_denoise)


@pytest.mark.parametrize("name,kw,match", [
    ("pc", {"n_corrector": -1}, "n_corrector"),
    ("pc", {"snr": 0.0}, "snr"),
    ("pc", {"step_size": "batch"}, "allowed"),
    ("pc", {"predictor": "ancestral"}, "allowed"),
    ("edm_sde", {"S_min": 2.0, "S_max": 1.0}, "S_min"),
    ("edm_sde", {"S_churn": -1.0}, "S_churn"),
])
def test_bad_options_are_one_line_errors(name, kw, match):
    with pytest.raises((SamplerError, ValueError, TypeError), match=match) as err:
        get_sampler(name, steps=4, **kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["edm_sde", "dpmpp_2m"])
def test_edm_view_samplers_refuse_psld(name):
    with pytest.raises(SamplerError, match="supports: ve, vp"):
        run(name, PROCESSES["psld"](), steps=3)


# ---- fastdiff.sample ------------------------------------------------------------------------------------------
TINY = {"process": {"name": "vp"}, "net": {"name": "mlp", "hidden": 16, "depth": 1, "emb_dim": 8}, "model": {}}


def tiny_model():
    from fastdiff.model import build_score_model

    model = build_score_model(TINY, (2,))
    torch.nn.init.normal_(model.net.out.weight, std=0.5, generator=torch.Generator().manual_seed(0))  # non-zero score
    return model


def test_api_sample_batches_and_concatenates_in_seed_order():
    import fastdiff

    model = tiny_model().train()
    res = fastdiff.sample(model, "edm_heun", nfe=9, seeds=range(3, 13), batch_size=4, shape=(2,))
    direct = get_sampler("edm_heun", nfe=9).sample(model, model.process, (10, 2), seeds=range(3, 13))
    torch.testing.assert_close(res.x, direct.x, atol=1e-5, rtol=1e-5)  # float32 net, different batch sizes
    assert res.nfe == 9 and res.calls == 3 * 9 and res.seeds == list(range(3, 13)) and res.info["batches"] == 3
    assert model.training  # mode restored
    by_steps = fastdiff.sample(model, "ode_euler", steps=3, seeds=[0], shape=(2,))
    assert by_steps.nfe == 4


def test_api_sample_from_a_checkpoint_path(tmp_path):
    import fastdiff

    model = tiny_model()
    path = tmp_path / "tiny.ckpt"
    torch.save({"hyper_parameters": {"config": TINY, "data_shape": [2]},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    with pytest.warns(UserWarning, match="no EMA"):
        res = fastdiff.sample(str(path), "dpmpp_2m", nfe=6, seeds=range(5), batch_size=2)
    ref = fastdiff.sample(model, "dpmpp_2m", nfe=6, seeds=range(5), shape=(2,))
    torch.testing.assert_close(res.x, ref.x, atol=1e-5, rtol=1e-5)  # float32 net, different batch sizes
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="does not match the checkpoint"):
        fastdiff.sample(path, "dpmpp_2m", nfe=6, seeds=range(2), shape=(3,))


def test_api_sample_errors():
    import fastdiff

    model = tiny_model()
    with pytest.raises(ValueError, match="shape="):
        fastdiff.sample(model, "edm_heun", nfe=5, seeds=range(2))
    with pytest.raises(ValueError, match="seeds is empty"):
        fastdiff.sample(model, "edm_heun", nfe=5, seeds=[], shape=(2,))
    with pytest.raises(TypeError, match="ScoreModel"):
        fastdiff.sample(lambda z, t: z, "edm_heun", nfe=5, seeds=[0], shape=(2,))
    with pytest.raises(ValueError, match="ready Sampler"):
        fastdiff.sample(model, get_sampler("edm_heun", nfe=5), seeds=[0], shape=(2,), rho=3.0)
