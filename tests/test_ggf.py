"""Gotta Go Fast (`ggf`): accuracy against closed forms, NFE accounting, batching, options and the bridge option."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.processes.base import Process
from fastdiff.samplers import SamplerError, get_sampler
from fastdiff.samplers.adaptive import BrownianPaths

T64 = torch.float64
D = 64


class ExactGaussianScore:
    """Exact score of N(mu, Q diag(lam) Q^T) under a linear process, vectorised over per-sample t."""

    def __init__(self, mu: Tensor, lam: Tensor, Q: Tensor, process: Process) -> None:
        self.lam, self.Q, self.process = lam, Q, process
        self.mu_rot = Q.T @ mu

    def cov_rot(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Per rotated coordinate: mean coefficient a [B, k] and state covariance C [B, d, k, k]."""
        a, L = self.process.marginal_coeffs(t)
        C = self.lam[None, :, None, None] * (a[:, None, :, None] * a[:, None, None, :]) + (L @ L.mT)[:, None]
        return a, C

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        B, k = z.shape[0], self.process.k
        a, C = self.cov_rot(torch.as_tensor(t, dtype=T64).reshape(-1).expand(B))
        diff = z.to(T64).reshape(B, k, -1) @ self.Q - a[:, :, None] * self.mu_rot  # [B, k, d]
        sol = torch.linalg.solve(C, diff.transpose(1, 2).unsqueeze(-1)).squeeze(-1)  # [B, d, k]
        return (-(sol.transpose(1, 2) @ self.Q.T)).reshape(z.shape).to(z.dtype)


def gaussian_64(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Anisotropic 64-d Gaussian with data roughly in [-1, 1]: std from 0.5 down to 0.05, random rotation."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=T64))
    lam = 0.25 * torch.logspace(0, -2, D, dtype=T64)
    mu = 0.3 * torch.randn(D, generator=g, dtype=T64)
    return mu, lam, Q


def tweedie_law(score: ExactGaussianScore, t_eps: float) -> Tensor:
    """Variances (rotated coords) of E[x0 | z_{t_eps}] for exact z_{t_eps}: lam^2 a^T C^-1 a."""
    a, C = score.cov_rot(torch.tensor([t_eps], dtype=T64))
    ca = torch.linalg.solve(C[0], a[0].expand(D, -1).unsqueeze(-1)).squeeze(-1)  # [d, k]
    return score.lam**2 * (ca * a[0]).sum(-1)


def test_exact_score_helper_matches_oracle():
    mu, lam, Q = gaussian_64()
    gm = GaussianMixture.gaussian(mu, Q @ torch.diag(lam) @ Q.T)
    t = torch.tensor([1e-3, 0.05, 0.5, 1.0], dtype=T64)
    for p in (VP(), VE(), PSLD()):
        z = torch.randn(4, p.k * D, dtype=T64, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ExactGaussianScore(mu, lam, Q, p)(z, t), gm.score(p, z, t), rtol=1e-7, atol=1e-7)


def check_law(process: Process, n: int) -> None:
    """ggf at eps_rel 0.01 on the 64-d Gaussian matches the exact law of the Tweedie output (whitened)."""
    mu, lam, Q = gaussian_64()
    score = ExactGaussianScore(mu, lam, Q, process)
    res = get_sampler("ggf", eps_rel=0.01).sample(score, process, (n, D), seeds=range(n))
    var = tweedie_law(score, process.t_eps_sample)
    y = ((res.x.to(T64) - mu) @ Q) / var.sqrt()  # ~ N(0, I) if the sampler is exact
    chi2 = n * (y.mean(0) ** 2).sum()
    assert chi2 < D + 5 * math.sqrt(2 * D), f"mean off: n |ybar|^2 = {chi2:.1f} (chi2_{D} expected)"
    v = y.var(0)
    se = math.sqrt(2 / (D * n))
    assert abs(v.mean() - 1) < 4 * se + 0.015, f"total variance ratio {v.mean():.4f}"
    for part in (v[:16], v[-16:]):  # largest and smallest eigen-directions
        assert abs(part.mean() - 1) < 5 * math.sqrt(2 / (16 * n)) + 0.03, f"variance ratios {part.tolist()}"
    cy = torch.cov(y.T)
    assert torch.linalg.norm(cy - torch.eye(D, dtype=T64)) < 1.3 * math.sqrt(D * (D + 1) / n)
    assert not res.info["stopped"].any()


def test_law_vp():
    check_law(VP(), 300)


def test_law_ve():
    check_law(VE(), 200)


@pytest.mark.slow
def test_law_psld():
    check_law(PSLD(), 300)


class RowCounter:
    """score_fn wrapper counting the rows it is asked for (independent of the framework's CountedScore)."""

    def __init__(self, fn) -> None:
        self.fn, self.rows, self.calls = fn, 0, 0

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        self.rows += z.shape[0]
        self.calls += 1
        return self.fn(z, t)


@pytest.mark.parametrize("noise_control", ["redraw", "bridge"])
def test_nfe_counting_and_batch_invariance(noise_control):
    p = VE()
    mu, lam, Q = gaussian_64()
    seeds = [3, 11, 5, 0, 7, 2, 9, 4]
    # compute_batch 0: the network sees exactly the active rows (padding to a fixed micro-batch is tested in
    # test_compute_batch.py), so the rows it evaluates must equal the per-sample NFE summed
    sampler = get_sampler("ggf", eps_rel=0.05, noise_control=noise_control, compute_batch=0)
    batch_fn = RowCounter(ExactGaussianScore(mu, lam, Q, p))
    full = sampler.sample(batch_fn, p, (8, D), seeds=seeds)
    attempts = full.info["accepted"] + full.info["rejected"]
    assert torch.equal(full.nfe_per_sample, 2 * attempts + 1)
    assert batch_fn.rows == int(full.nfe_per_sample.sum()) and batch_fn.calls == full.calls
    assert full.calls == int(full.nfe_per_sample.max())  # one batched call per round, + the final denoise
    assert full.info["rejected"].sum() > 0  # the rejection path is exercised
    for k in (0, 5):
        solo_fn = RowCounter(ExactGaussianScore(mu, lam, Q, p))
        solo = sampler.sample(solo_fn, p, (1, D), seeds=[seeds[k]])
        assert solo_fn.rows == solo.nfe == int(full.nfe_per_sample[k])
        torch.testing.assert_close(solo.state[0], full.state[k], atol=1e-6, rtol=1e-6)
        assert int(solo.info["accepted"][0]) == int(full.info["accepted"][k])


def test_smaller_eps_rel_never_fewer_nfe():
    p = VP()
    mu, lam, Q = gaussian_64()
    score = ExactGaussianScore(mu, lam, Q, p)
    nfes = [get_sampler("ggf", eps_rel=e).sample(score, p, (8, D), seeds=range(8)).nfe for e in (0.1, 0.05, 0.02, 0.01)]
    assert all(a < b for a, b in zip(nfes, nfes[1:])), nfes


def test_max_nfe_stops_with_warning_naming_seeds():
    p = VP()
    mu, lam, Q = gaussian_64()
    with pytest.warns(RuntimeWarning, match=r"max_nfe=21.*seeds: 40, 41, 42"):
        res = get_sampler("ggf", eps_rel=0.01, max_nfe=21).sample(ExactGaussianScore(mu, lam, Q, p), p, (3, D),
                                                                  seeds=[40, 41, 42])
    assert (res.nfe_per_sample <= 21).all() and res.info["stopped"].all()
    assert (res.info["t_final"] > 0.5).all() and torch.isfinite(res.x).all()


def one_step(process: Process, **options) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A single accepted step T -> t_eps (huge eps_abs), no denoise; returns (output, x, x', x'') by hand."""
    mu, lam, Q = gaussian_64()
    score = ExactGaussianScore(mu, lam, Q, process)
    T, te = process.T, process.t_eps_sample
    out = get_sampler("ggf", eps_abs=1e9, h_init=10.0, final_denoise=False, dtype="float64", **options).sample(
        score, process, (1, D), seeds=[13]).state
    g = torch.Generator().manual_seed(13)  # the sample's own stream: prior draw, then the attempt's z
    x = process.prior_sample(torch.randn(process.k * D, generator=g).to(T64)[None])
    z = torch.randn(process.k * D, generator=g).to(T64)[None]
    h = T - te
    F1 = process.reverse_drift(x, T, score(x, torch.tensor([T], dtype=T64)))
    x1 = x - h * F1 + process.sde(x, T)[1] * math.sqrt(h) * z
    F2 = process.reverse_drift(x1, te, score(x1, torch.tensor([te], dtype=T64)))
    g2 = process.sde(x, T if options.get("drift_only_heun") else te)[1]
    x2 = 0.5 * (x1 + x - h * F2 + g2 * math.sqrt(h) * z)
    return out, x, x1, x2


@pytest.mark.parametrize("process", [VE(), PSLD()], ids=["ve", "psld"])
def test_step_formulas_by_hand(process):
    out, _, _, x2 = one_step(process)
    torch.testing.assert_close(out, x2)
    out, _, x1, _ = one_step(process, extrapolation=False)
    torch.testing.assert_close(out, x1)
    out, _, _, x2 = one_step(process, drift_only_heun=True)
    torch.testing.assert_close(out, x2)


def test_norm_and_use_prev_ablations_cost():
    p = VP()
    mu, lam, Q = gaussian_64()
    score = ExactGaussianScore(mu, lam, Q, p)
    run = lambda **kw: get_sampler("ggf", eps_rel=0.05, **kw).sample(score, p, (8, D), seeds=range(8)).nfe  # noqa: E731
    base = run()
    assert run(norm="linf") > base  # l-inf >= RMS at every attempt: smaller steps
    assert run(use_prev=False) >= 0.8 * base


def test_options_and_errors():
    with pytest.raises(SamplerError, match="adaptive.*eps_rel"):
        get_sampler("ggf", steps=10)
    with pytest.raises(SamplerError, match="adaptive.*max_nfe"):
        get_sampler("ggf", nfe=100)
    for bad in (dict(eps_abs=0.0), dict(theta=1.5), dict(max_nfe=2), dict(eps_rel=-1.0)):
        with pytest.raises(SamplerError):
            get_sampler("ggf", **bad)
    with pytest.raises(ValueError, match="allowed"):
        get_sampler("ggf", noise_control="bogus")
    s = get_sampler("ggf", eps_rel=0.02, norm="linf", noise_control="bridge", max_nfe=500)
    cfg = s.config()
    assert "steps" not in cfg and get_sampler(**cfg).config() == cfg
    assert s.min_nfe == 3


def test_bridge_path_is_brownian_under_selective_rejection():
    """Reject whenever the increment is large (> sqrt(h)) and retry with h/2: the path must stay Brownian.

    (Redrawing instead would make every accepted increment small: variance E[xi^2 | |xi| <= 1] = 0.29 per unit time.)
    """
    n, T = 4000, 1.0
    gen = torch.Generator().manual_seed(0)
    paths = BrownianPaths(n, (1,), T64, torch.device("cpu"))
    t = torch.full((n,), T, dtype=T64)
    h = torch.full((n,), 0.25, dtype=T64)
    total = torch.zeros(n, 1, dtype=T64)
    for _ in range(2000):
        rows = (t > 1e-12).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        hr = torch.minimum(h[rows], t[rows])
        s = t[rows] - hr
        xi = torch.randn(len(rows), 1, generator=gen, dtype=T64)
        w, known = paths.increment(rows, t[rows], s, xi)
        ok = (w.abs() <= hr.sqrt()[:, None]).squeeze(1) | (hr < 1 / 64)
        paths.settle(rows, s, w, ok, known)
        total[rows[ok]] += w[ok]
        t[rows[ok]] = s[ok]
        h[rows] = torch.where(ok, torch.full_like(hr, 0.25), hr / 2)
    assert (t <= 1e-12).all()
    se = math.sqrt(2 / n)
    assert abs(total.var().item() / T - 1) < 4 * se, total.var().item()  # W(0) - W(T) ~ N(0, T)
    assert paths.times.shape[1] > 2  # deep refinements were exercised


def test_bridge_removes_low_dimensional_bias():
    """1-d N(0, 0.25): the paper's redraw inflates the variance; Brownian-path-preserving rejection does not."""
    p, n = VP(), 400
    mu, lam, Q = torch.zeros(1, dtype=T64), torch.full((1,), 0.25, dtype=T64), torch.eye(1, dtype=T64)
    score = ExactGaussianScore(mu, lam, Q, p)
    a, L = p.marginal_coeffs(torch.tensor([p.t_eps_sample], dtype=T64))
    target = 0.25**2 * a[0, 0] ** 2 / (a[0, 0] ** 2 * 0.25 + L[0, 0, 0] ** 2)  # exact Tweedie-output variance
    se = float(target) * math.sqrt(2 / n)
    var = {nc: get_sampler("ggf", eps_rel=0.05, noise_control=nc).sample(score, p, (n, 1), seeds=range(n)).x.var().item()
           for nc in ("redraw", "bridge")}
    assert abs(var["bridge"] - target) < 4 * se, var
    assert var["redraw"] > target + 6 * se, var  # the measured property of the faithful algorithm
