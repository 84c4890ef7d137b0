"""Processes: closed-form kernels vs the PSLD table, moment ODEs, transitions, scores and Tweedie."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from fastdiff.processes import PSLD, VE, VP, get_process
from fastdiff.samplers.grids import GRIDS, time_grid

ALL = [VE(), VP(), PSLD(), PSLD(gamma=0.0, nu=2.0)]
IDS = ["ve", "vp", "psld", "cld"]
T64 = torch.float64

# DESIGN.md section 2: HSM, Gamma 0.01, nu 4.01, beta 8, kappa 0.04
PSLD_TABLE = [
    (1e-5, 8.012563e-07, 1.606014e-06, 1.007698e-02, 8.951292e-04, 1.794170e-03, 1.003681e-01),
    (1e-3, 8.319144e-05, 2.191673e-04, 1.757623e-02, 9.120934e-03, 2.402904e-02, 1.303796e-01),
    (1e-2, 1.622935e-03, 6.702712e-03, 7.567501e-02, 4.028567e-02, 1.663795e-01, 2.190727e-01),
    (0.1, 2.280107e-01, 1.288251e-01, 2.160312e-01, 4.775047e-01, 2.697881e-01, 3.784779e-01),
    (0.5, 9.869916e-01, 5.079589e-03, 2.480146e-01, 9.934745e-01, 5.112954e-03, 4.979844e-01),
    (1.0, 9.999852e-01, 6.532167e-06, 2.499971e-01, 9.999926e-01, 6.532215e-06, 4.999971e-01),
]


@pytest.mark.parametrize("row", PSLD_TABLE, ids=[str(r[0]) for r in PSLD_TABLE])
def test_psld_kernel_table(row):
    t, sxx, sxm, smm, l11, l21, l22 = row
    p = PSLD()
    cov = p.marginal_cov(torch.tensor([t], dtype=T64))[0]
    _, L = p.marginal_coeffs(torch.tensor([t], dtype=T64))
    got = [cov[0, 0], cov[0, 1], cov[1, 1], L[0, 0, 0], L[0, 1, 0], L[0, 1, 1]]
    for g, want in zip(got, [sxx, sxm, smm, l11, l21, l22]):
        assert abs(g.item() - want) <= 1e-5 * abs(want)


def test_defaults_and_constructor_names():
    assert (VE().sigma_min, VE().sigma_max) == (0.01, 50.0)
    assert (VP().beta_min, VP().beta_max) == (0.1, 20.0)
    p = PSLD()
    assert (p.beta, p.gamma, p.nu, p.kappa) == (8.0, 0.01, 4.01, 0.04)
    assert abs(p.m_inv - 4.0) < 1e-12 and abs(p.mass - 0.25) < 1e-12
    assert VE().t_eps_sample == 1e-5 and VP().t_eps_sample == 1e-3 and p.t_eps_sample == 1e-3
    assert get_process("psld", beta=4.0).beta == 4.0
    with pytest.raises(TypeError, match="unknown option"):
        get_process("vp", beta_mx=3)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VE(sigma_min=2.0, sigma_max=1.0)


def _moment_ode(p, t0: float, t1: float, mean0: np.ndarray, cov0: np.ndarray):
    """Integrate dm/dt = F m, dS/dt = F S + S F^T + G G^T per coordinate block (independent of the kernels)."""
    k = mean0.shape[0]

    def rhs(t, y):
        F, GG = (m[0].numpy() for m in p.sde_coeffs(torch.tensor([t], dtype=T64)))
        m, S = y[:k], y[k:].reshape(k, k)
        return np.concatenate([F @ m, (F @ S + S @ F.T + GG).ravel()])

    sol = solve_ivp(rhs, (t0, t1), np.concatenate([mean0, cov0.ravel()]), rtol=1e-11, atol=1e-13, method="DOP853")
    y = sol.y[:, -1]
    return y[:k], y[k:].reshape(k, k)


@pytest.mark.parametrize("p", ALL, ids=IDS)
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.3, 1.0])
def test_kernel_matches_moment_ode(p, t):
    k = p.k
    x0 = 0.7
    mean0 = np.zeros(k)
    mean0[0] = x0
    cov0 = np.zeros((k, k))
    if k == 2:
        cov0[1, 1] = p.initial_aux_var()
    if isinstance(p, VE):  # the VE kernel x0 + sigma(t) eps already has variance sigma_min^2 at t = 0
        cov0[0, 0] = p.sigma_min**2
    m_ode, S_ode = _moment_ode(p, 0.0, t, mean0, cov0)
    a, L = p.marginal_coeffs(torch.tensor([t], dtype=T64))
    S = (L @ L.transpose(-1, -2))[0].numpy()
    np.testing.assert_allclose(a[0].numpy() * x0, m_ode, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(S, S_ode, rtol=1e-6, atol=2e-9)


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_transition_matches_moment_ode_and_composes(p):
    s, u, t = 0.1, 0.35, 0.8
    k = p.k
    ts = lambda v: torch.tensor([v], dtype=T64)  # noqa: E731
    A_st, Q_st = (m[0].numpy() for m in p.transition_coeffs(ts(s), ts(t)))
    for j in range(k):  # columns of A from unit initial means, Q from zero initial covariance
        e = np.eye(k)[j]
        m_ode, S_ode = _moment_ode(p, s, t, e, np.zeros((k, k)))
        np.testing.assert_allclose(A_st[:, j], m_ode, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(Q_st, S_ode, rtol=1e-6, atol=1e-10)
    A_su, Q_su = (m[0].numpy() for m in p.transition_coeffs(ts(s), ts(u)))
    A_ut, Q_ut = (m[0].numpy() for m in p.transition_coeffs(ts(u), ts(t)))
    np.testing.assert_allclose(A_ut @ A_su, A_st, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(A_ut @ Q_su @ A_ut.T + Q_ut, Q_st, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_transition_sampling_statistics(p):
    n = 200_000
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(n, p.k * 1, dtype=T64)
    z[:, 0] = 0.5
    s, t = 0.2, 0.6
    out = p.transition(z, s, t, torch.randn(n, p.k, generator=g, dtype=T64))
    A, Q = (m[0] for m in p.transition_coeffs(torch.tensor([s], dtype=T64), torch.tensor([t], dtype=T64)))
    torch.testing.assert_close(out.mean(0), A[:, 0] * 0.5, atol=5e-3 * Q.diagonal().sqrt().max().item() + 1e-6, rtol=0)
    scale = torch.outer(Q.diagonal().sqrt(), Q.diagonal().sqrt())  # sampling error of a covariance ~ scale / sqrt(n)
    assert ((torch.cov(out.T).reshape(p.k, p.k) - Q).abs() <= 0.01 * scale).all()


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_score_from_eps_is_conditional_score(p):
    """score_from_eps(true eps) = -Sigma^{-1}(z - mean) computed with a full matrix inverse."""
    g = torch.Generator().manual_seed(1)
    B, d = 5, 3
    x0 = torch.randn(B, d, generator=g, dtype=T64)
    eps = torch.randn(B, p.k * d, generator=g, dtype=T64)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.5, 0.9], dtype=T64)
    z = p.perturb(x0, t, eps)
    got = p.score_from_eps(eps, z, t)
    a, L = p.marginal_coeffs(t)
    for b in range(B):
        cov = torch.kron(L[b] @ L[b].T, torch.eye(d, dtype=T64))
        mean = torch.kron(a[b], x0[b])
        want = -torch.linalg.solve(cov, z[b] - mean)
        torch.testing.assert_close(got[b], want, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(p.eps_from_score(got, z, t), eps, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_denoise_is_posterior_mean_for_gaussian_data(p):
    """Tweedie with the exact score equals E[x0 | z_t] for x0 ~ N(mu, S) (closed form with full matrices)."""
    from fastdiff.oracle import GaussianMixture

    d = 2
    mu = torch.tensor([0.5, -1.0], dtype=T64)
    S = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=T64)
    gm = GaussianMixture.gaussian(mu, S)
    z = torch.randn(4, p.k * d, dtype=T64, generator=torch.Generator().manual_seed(2))
    for t in (2e-3, 0.05, 0.4):
        a, L = (m[0] for m in p.marginal_coeffs(torch.tensor([t], dtype=T64)))
        Amat = torch.kron(a[:, None], torch.eye(d, dtype=T64))  # [k d, d]
        C = Amat @ S @ Amat.T + torch.kron(L @ L.T, torch.eye(d, dtype=T64))
        post = mu + (S @ Amat.T @ torch.linalg.solve(C, (z - (Amat @ mu)).T)).T
        got = p.denoise(z, t, gm.score(p, z, t))
        torch.testing.assert_close(got, post, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("p", [VE(), VP()], ids=["ve", "vp"])
def test_edm_view(p):
    t = torch.tensor([1e-4, 0.01, 0.3, 1.0], dtype=T64)
    a, L = p.marginal_coeffs(t)
    torch.testing.assert_close(a[:, 0], p.scale(t))
    torch.testing.assert_close(L[:, 0, 0], p.scale(t) * p.sigma(t), rtol=1e-10, atol=0)
    torch.testing.assert_close(p.t_of_sigma(p.sigma(t)), t, rtol=1e-9, atol=1e-12)
    lo, hi = p.sigma_range()
    assert lo < hi


PRIORS = [(VE(), [[50.0**2]]), (VP(), [[1.0]]), (PSLD(), [[1.0, 0.0], [0.0, 0.25]]),
          (PSLD(gamma=0.0, nu=2.0), [[1.0, 0.0], [0.0, 1.0]])]


@pytest.mark.parametrize("p,prior", PRIORS, ids=IDS)
def test_prior_is_the_stationary_law_and_sde_shapes(p, prior):
    n = 200_000
    eps = torch.randn(n, p.k, dtype=T64, generator=torch.Generator().manual_seed(3))
    z = p.prior_sample(eps)
    want = torch.tensor(prior, dtype=T64)
    scale = torch.outer(want.diagonal().sqrt(), want.diagonal().sqrt())
    assert ((torch.cov(z.T).reshape(p.k, p.k) - want).abs() <= 0.015 * scale).all()  # ~5 standard errors
    if isinstance(p, VP) or (isinstance(p, PSLD) and p.gamma > 0):
        _, L = p.marginal_coeffs(torch.tensor([p.T], dtype=T64))  # default processes have converged at T
        torch.testing.assert_close((L @ L.transpose(-1, -2))[0], want, atol=1e-3, rtol=0)
    zi = torch.randn(3, p.k * 2, 4, 4)
    f, g = p.sde(zi, torch.rand(3))
    assert f.shape == zi.shape and (g * zi).shape == zi.shape


@pytest.mark.parametrize("p", ALL, ids=IDS)
@pytest.mark.parametrize("kind", GRIDS)
def test_time_grids(p, kind):
    ts = time_grid(kind, p, 20)
    assert ts.shape == (21,) and ts[0] == p.T and abs(ts[-1].item() - p.t_eps_sample) < 1e-12
    assert (ts[1:] < ts[:-1]).all()
    lam = p.log_snr(ts)
    assert (lam[1:] > lam[:-1]).all()
    if kind == "logsnr":
        diffs = lam[1:] - lam[:-1]
        torch.testing.assert_close(diffs, diffs.mean().expand(20), rtol=1e-6, atol=1e-6)
    if kind == "quadratic":
        i = torch.arange(21, dtype=T64) / 20
        want = p.T - (p.T - p.t_eps_sample) * (1 - (1 - i) ** 2)
        torch.testing.assert_close(ts, want)
    with pytest.raises(ValueError, match="allowed"):
        time_grid("cosine", p, 5)
