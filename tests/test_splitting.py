"""Splitting integrators for PSLD (sscs, oba, bao, obab, sps, split_ode) against closed forms on the oracle.

With Gaussian data the oracle score is affine in z, so every step of every scheme is an affine map of
(state, noise). Probing that map with unit vectors gives its exact mean/covariance action, so one-step
laws and the final sample law are computed exactly (no Monte Carlo noise) and compared with closed forms.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VP
from fastdiff.samplers import SamplerError, get_sampler
from fastdiff.samplers.base import CountedScore

torch.set_num_threads(1)
F64 = torch.float64
GAUSS = GaussianMixture.gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]])
STOCHASTIC = [("sscs", ()), ("oba", ()), ("bao", ()), ("obab", ()), ("sps", ()), ("sps", (("time_label", "end"),)),
              ("sps", (("time_label", "mid"), ("lambda_s", 0.0)))]
DETERMINISTIC = [("split_ode", (("scheme", s), ("reduced", r))) for s in ("ba", "bab") for r in (False, True)]
NFE_PER_STEP = {"sscs": 1, "oba": 2, "bao": 2, "obab": 3, "sps": 1}


# ---- exact affine probing ------------------------------------------------------------------------------
class ProbeNoise:
    """Stands in for NoiseSource: draw j puts unit vectors on the rows reserved for it, zeros elsewhere."""

    def __init__(self, D: int, draws: int) -> None:
        self.D, self.draws, self.calls = D, draws, 0

    def randn_like(self, z: torch.Tensor, idx=None) -> torch.Tensor:
        j, D = self.calls, self.D
        self.calls += 1
        assert j < self.draws, "more noise draws per step than probed"
        out = torch.zeros(z.shape[0], D, dtype=z.dtype)
        out[1 + D + j * D: 1 + D + (j + 1) * D] = torch.eye(D, dtype=z.dtype)
        return out


def probe(fn, D: int, draws: int = 2, offset: torch.Tensor | None = None):
    """(P, q, R) with fn(offset + z, xi) = q + P z + R xi for the affine map fn."""
    n = 1 + D + draws * D
    z = torch.zeros(n, D, dtype=F64)
    z[1:1 + D] = torch.eye(D, dtype=F64)
    out = fn(z if offset is None else z + offset, ProbeNoise(D, draws), n)
    q = out[0]
    return (out[1:1 + D] - q).T, q, (out[1 + D:] - q).T


def exact_law(sampler, process, gm=GAUSS):
    """Exact mean and covariance of the sampler's output x for Gaussian data (propagated through probed steps)."""
    d = gm.dim
    D, sf = 2 * d, gm.score_fn(process)
    ts = sampler.grid(process, "cpu")
    mu = torch.zeros(D, dtype=F64)
    cov = torch.diag(torch.tensor([1.0] * d + [process.mass] * d, dtype=F64))
    segs = [ts[i:i + 2] for i in range(len(ts) - 1)] if sampler.stochastic else [ts]
    for seg in segs:
        P, q, R = probe(lambda z, nz, n: sampler.integrate(CountedScore(sf, n, "cpu"), process, z, seg, nz), D)
        mu, cov = P @ mu + q, P @ cov @ P.T + R @ R.T
    P, q, _ = probe(lambda z, nz, n: sampler.finish(CountedScore(sf, n, "cpu"), process, z, ts[-1]), D, draws=0)
    mu, cov = P @ mu + q, P @ cov @ P.T
    return mu[:d], cov[:d, :d]


def tweedie_law(process, gm, t):
    """Law of E[x0 | z_t] for Gaussian data: mean mu0, covariance C Sigma_z^-1 C^T with C = Cov(z_t, x0)."""
    a, _ = process.marginal_coeffs(torch.tensor([float(t)], dtype=F64))
    _, covz = gm.marginal_params(process, float(t))
    C = torch.kron(a[0][:, None], gm.covs[0])
    return gm.means[0], C.T @ torch.linalg.solve(covz[0], C)


@functools.lru_cache(maxsize=None)
def exact_error(name: str, opts: tuple, nfe: int, gamma: float = 0.01) -> float:
    process = PSLD(gamma=gamma)
    sampler = get_sampler(name, nfe=nfe, dtype="float64", **dict(opts))
    mu, cov = exact_law(sampler, process)
    mu0, cov0 = tweedie_law(process, GAUSS, process.t_eps_sample)
    return float((mu - mu0).norm() + (cov - cov0).norm())


# ---- registry, budgets, options ------------------------------------------------------------------------
@pytest.mark.parametrize("name,opts", STOCHASTIC + DETERMINISTIC)
def test_budget_config_and_counted_nfe(name, opts):
    s = get_sampler(name, nfe=20, **dict(opts))
    o = dict(opts)
    if name == "split_ode":
        per = {("ba", False): 2, ("ba", True): 1, ("bab", False): 3, ("bab", True): 1}[(o["scheme"], o["reduced"])]
        extra = 1 if (o["scheme"], o["reduced"]) == ("bab", True) else 0
    else:
        per, extra = NFE_PER_STEP[name], 0
    assert s.nfe_for(7) == 7 * per + extra + 1
    assert s.nfe <= 20 and s.nfe_for(s.steps + 1) > 20
    cfg = s.config()
    assert get_sampler(**cfg).config() == cfg
    res = s.sample(GaussianMixture.ring(4).score_fn(PSLD()), PSLD(), (3, 2), seeds=range(3))
    assert res.nfe == s.nfe and res.x.shape == (3, 2) and res.state.shape == (3, 4)
    with pytest.raises(SamplerError, match="minimum"):
        get_sampler(name, nfe=1, **o)


@pytest.mark.parametrize("name", ["sscs", "oba", "bao", "obab", "sps", "split_ode"])
def test_refuses_vp(name):
    with pytest.raises(SamplerError, match="psld"):
        get_sampler(name, steps=3).sample(GAUSS.score_fn(VP()), VP(), (2, 2), seeds=[0, 1])


def test_option_errors():
    with pytest.raises(SamplerError, match="lambda_s"):
        get_sampler("sps", steps=3, lambda_s=-0.5)
    with pytest.raises(SamplerError, match="lambda_m"):
        get_sampler("obab", steps=3, lambda_m=float("nan"))
    with pytest.raises(SamplerError, match="time_label"):
        get_sampler("split_ode", steps=3, scheme="bab", time_label="mid")
    with pytest.raises(ValueError, match="allowed"):
        get_sampler("sps", steps=3, time_label="late")
    assert get_sampler("split_ode", steps=3, scheme="ba", time_label="end").options.time_label == "end"


@pytest.mark.parametrize("name", ["sscs", "sps", "obab"])
def test_batch_invariance(name):
    p, sf = PSLD(), GaussianMixture.ring(4).score_fn(PSLD())
    s = get_sampler(name, nfe=9)
    full = s.sample(sf, p, (4, 2), seeds=[3, 5, 7, 9]).state
    alone = s.sample(sf, p, (1, 2), seeds=[7]).state
    assert float((full[2:3] - alone).abs().max()) <= 1e-6


# ---- the exact sub-steps -------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.01, 0.0, 1.0])
def test_linear_step_is_exact_ou(gamma):
    """SSCS linear part: mean map = expm((b/2) K); covariance by Van Loan's integral and by Sigma_inf - E Sigma_inf E^T."""
    p = PSLD(gamma=gamma)
    t_hi, t_lo = 0.7, 0.55
    b = p.beta * (t_hi - t_lo)
    K = 0.5 * np.array([[-p.gamma, -p.m_inv], [1.0, -p.nu]])
    GG = np.diag([p.gamma, p.mass * p.nu])  # G G^T per unit of integrated beta
    E_ref = scipy.linalg.expm(b * K)
    van_loan = scipy.linalg.expm(b * np.block([[K, GG], [np.zeros((2, 2)), -K.T]]))
    C_ref = van_loan[:2, 2:] @ E_ref.T
    S_inf = np.diag([1.0, p.mass])
    E, C = p.linear_coeffs(t_hi, t_lo)
    np.testing.assert_allclose(E[0].numpy(), E_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(C[0].numpy(), C_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(C[0].numpy(), S_inf - E_ref @ S_inf @ E_ref.T, rtol=1e-9, atol=1e-12)
    # and linear_step applies them: probe the affine map
    P, q, R = probe(lambda z, nz, n: p.linear_step(z, t_hi, t_lo, nz.randn_like(z)), 2, draws=1)
    np.testing.assert_allclose(P.numpy(), E_ref, atol=1e-12)
    np.testing.assert_allclose((R @ R.T).numpy(), C_ref, atol=1e-12)


@pytest.mark.parametrize("delta", [0.01, 5.0])
@pytest.mark.parametrize("lam,lam_m", [(1.0, 1.0), (0.3, 0.6)])
def test_o_step_leaves_stationary_law_invariant(delta, lam, lam_m):
    """Statistical test: O maps N(0, 1) x N(0, M) samples to the same law, with lag correlations e^{-r/2}."""
    p = PSLD()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    z = torch.randn(n, 2, generator=g, dtype=F64) * torch.tensor([1.0, math.sqrt(p.mass)], dtype=F64)
    z1 = p.o_friction(z, delta, torch.randn(n, 2, generator=g, dtype=F64), lam, lam_m)
    var = torch.tensor([1.0, p.mass], dtype=F64)
    tol = 5 * math.sqrt(2.0 / n)  # 5 standard errors of a relative variance estimate
    assert float((z1.var(0) / var - 1).abs().max()) < tol, z1.var(0) / var
    assert z1.mean(0).abs().max() < 5 * math.sqrt(p.mass / n) + 5 / math.sqrt(n)
    assert abs(float((z1[:, 0] * z1[:, 1]).mean())) / math.sqrt(p.mass) < 5 / math.sqrt(n)
    lag = (z * z1).mean(0) / var
    expect = torch.tensor([math.exp(-lam**2 * p.gamma * delta / 2), math.exp(-lam_m**2 * p.nu * delta / 2)], dtype=F64)
    assert float((lag - expect).abs().max()) < 5 / math.sqrt(n), (lag, expect)


# ---- one step against Euler–Maruyama / Euler on the PF-ODE ---------------------------------------------
Z0 = torch.tensor([[0.3, -0.2, 0.4, 0.1]], dtype=F64)
T0 = 0.3


def one_step_law(name: str, opts: dict, h: float, gamma: float = 0.01):
    p = PSLD(gamma=gamma)
    sf = GAUSS.score_fn(p)
    s = get_sampler(name, steps=1, dtype="float64", **opts)
    seg = torch.tensor([T0, T0 - h], dtype=F64)
    _, q, R = probe(lambda z, nz, n: s.integrate(CountedScore(sf, n, "cpu"), p, z, seg, nz), 4, offset=Z0)
    return q, R @ R.T


def reverse_step_law(h: float, prob_flow: bool, lam: float = 1.0, gamma: float = 0.01, lam_m: float = 1.0):
    """Closed form of one Euler(-Maruyama) step from Z0 at T0 of the PF-ODE, or of the reverse SDE family
    dz = [-F z + diag((1 + lam^2)/2, (1 + lam_m^2)/2) G G^T score] ds + diag(lam, lam_m) G dw
    (same marginals for every lam, lam_m; both 1: the reverse SDE of Song et al.)."""
    p = PSLD(gamma=gamma)
    t = torch.tensor([T0], dtype=F64)
    s_x, s_m = p.split(GAUSS.score(p, Z0, t))
    score = p.join([0.5 * (1 + lam**2) * s_x, 0.5 * (1 + lam_m**2) * s_m])
    drift = p.reverse_drift(Z0, t, score, prob_flow=prob_flow)[0]
    gg = torch.diagonal(p.sde_coeffs(t)[1][0]) * torch.tensor([lam**2, lam_m**2], dtype=F64)
    return Z0[0] - h * drift, (0.0 if prob_flow else h) * torch.diag(gg.repeat_interleave(2))


@pytest.mark.parametrize("name,opts", STOCHASTIC[:5] + [("sps", (("time_label", "end"),))])
def test_one_step_matches_euler_maruyama_to_first_order(name, opts):
    """With lambda_s = lambda_m = 1 every split is consistent with the reverse SDE: mean and covariance differ by O(h^2).
    (sps defaults to lambda_m = 0.8, a member of the same-marginals family: set 1 here; the family is tested below.)"""
    errs = []
    opts = {**({"lambda_m": 1.0} if name == "sps" else {}), **dict(opts)}
    for h in (4e-3, 2e-3, 1e-3):
        mean, cov = one_step_law(name, opts, h)
        m_ref, c_ref = reverse_step_law(h, prob_flow=False)
        errs.append(((mean - m_ref).norm().item(), (cov - c_ref).norm().item()))
    for (m1, c1), (m2, c2) in zip(errs, errs[1:]):
        assert m1 / m2 > 3.3 and c1 / c2 > 3.3, errs  # O(h^2): ratio 4 per halving (O(h) would give 2)


@pytest.mark.parametrize("lam,lam_m", [(0.5, 1.0), (0.0, 1.0), (1.0, 0.5), (0.0, 0.0)])
def test_lambdas_follow_their_reverse_sde_family(lam, lam_m):
    """SPS with lambda_s / lambda_m is consistent (O(h^2) per step) with that reverse-SDE family, and differs from
    the lambda = 1 reverse SDE at first order. Gamma = 1 makes the position terms large enough to see."""
    own, std = [], []
    for h in (4e-3, 2e-3, 1e-3):
        mean, cov = one_step_law("sps", {"lambda_s": lam, "lambda_m": lam_m}, h, gamma=1.0)
        m_ref, c_ref = reverse_step_law(h, False, lam, gamma=1.0, lam_m=lam_m)
        own.append(((mean - m_ref).norm().item(), (cov - c_ref).norm().item()))
        std.append(float((mean - reverse_step_law(h, False, gamma=1.0)[0]).norm()))
    for (m1, c1), (m2, c2) in zip(own, own[1:]):
        assert m1 / m2 > 3.3 and (c1 / c2 > 3.3 if lam + lam_m > 0 else c1 == c2 == 0.0), own  # lam = 0: PF-ODE
    assert std[1] / std[2] < 2.5, std  # first order: ratio -> 2 per halving


@pytest.mark.parametrize("name,opts", DETERMINISTIC)
def test_ode_split_matches_pf_ode_euler_to_first_order(name, opts):
    errs = []
    for h in (4e-3, 2e-3, 1e-3):
        mean, cov = one_step_law(name, dict(opts), h)
        assert float(cov.abs().max()) == 0.0
        errs.append(float((mean - reverse_step_law(h, prob_flow=True)[0]).norm()))
    assert errs[0] / errs[1] > 3.3 and errs[1] / errs[2] > 3.3, errs


# ---- convergence of the full sampler -------------------------------------------------------------------
@pytest.mark.parametrize("name,opts", STOCHASTIC + DETERMINISTIC)
def test_exact_gaussian_law_converges(name, opts):
    """Exact law of the output for Gaussian data: error (mean + covariance) falls at first order in NFE."""
    e25, e100 = exact_error(name, opts, 25), exact_error(name, opts, 100)
    assert e100 < 0.6 * e25 and e100 < 0.15, (e25, e100)


@pytest.mark.parametrize("naive,reduced", [
    (("oba", ()), ("sps", ())),
    (("split_ode", (("scheme", "ba"), ("reduced", False))), ("split_ode", (("scheme", "ba"), ("reduced", True)))),
    (("split_ode", (("scheme", "bab"), ("reduced", False))), ("split_ode", (("scheme", "bab"), ("reduced", True)))),
])
def test_reduced_beats_naive_at_nfe50_gaussian(naive, reduced):
    assert exact_error(*reduced, 50) < exact_error(*naive, 50)


def within_component_sq(x: torch.Tensor, gm: GaussianMixture) -> torch.Tensor:
    """Squared distance of each point to its nearest mixture mean (2 std^2 on average for a well-separated ring)."""
    return torch.cdist(x.double(), gm.means).min(1).values ** 2


def test_reduced_beats_naive_at_nfe50_ring_mixture():
    """8-ring mixture (non-Gaussian oracle), NFE 50: SPS's within-component spread is closer to the truth than OBA's."""
    p, gm, n = PSLD(), GaussianMixture.ring(8, 1.0, 0.1), 1000
    truth = within_component_sq(gm.sample(20_000, torch.Generator().manual_seed(1)), gm)
    stderr = float(truth.std()) / math.sqrt(n)
    err = {}
    for name in ("oba", "sps"):
        x = get_sampler(name, nfe=50).sample(gm.score_fn(p), p, (n, 2), seeds=range(n)).x
        err[name] = abs(float(within_component_sq(x, gm).mean() - truth.mean()))
    assert err["sps"] < err["oba"] and err["oba"] > 5 * stderr, (err, stderr)


def test_cld_runs_and_converges():
    """CLD = PSLD(gamma=0): every scheme runs; the exact Gaussian error of SPS and SSCS falls with NFE."""
    p = PSLD(gamma=0.0)
    sf = GaussianMixture.ring(4).score_fn(p)
    for name, opts in STOCHASTIC[:5] + DETERMINISTIC[::3]:
        res = get_sampler(name, nfe=12, **dict(opts)).sample(sf, p, (3, 2), seeds=range(3))
        assert torch.isfinite(res.state).all()
    for name in ("sps", "sscs"):
        assert exact_error(name, (), 100, gamma=0.0) < 0.6 * exact_error(name, (), 25, gamma=0.0)


# ---- the literal split (issue 14) and the authors' final Euler step ------------------------------------------
@pytest.mark.parametrize("delta", [0.05, 0.8])
def test_o_momentum_is_the_exact_expanding_ou(delta):
    """O of the literal split solves dm = (nu/2) m + sqrt(M nu) dw' exactly: mean factor e^{nu delta/2}, variance
    by Van Loan's integral of the 1-D OU (independent of the closed form in the code); x is untouched."""
    p = PSLD()
    a, q = 0.5 * p.nu, p.mass * p.nu
    van_loan = scipy.linalg.expm(delta * np.array([[a, q], [0.0, -a]]))
    var_ref = van_loan[0, 1] * math.exp(a * delta)
    P, _, R = probe(lambda z, nz, n: p.o_momentum(z, delta, nz.randn_like(z)), 2, draws=1)
    np.testing.assert_allclose(P.numpy(), np.diag([1.0, math.exp(a * delta)]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose((R @ R.T).numpy(), np.diag([0.0, var_ref]), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("lam", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("gamma", [1.0, 0.01])
def test_literal_split_matches_its_reverse_sde_to_first_order(lam, gamma):
    """The literal O/B/A composition equals one Euler-Maruyama step of the reverse-SDE family with lambda_s on the
    position and full momentum noise up to O(h^2) (mean and covariance): error ratio 4 per halving of h (> 3.3;
    a first-order mismatch would give 2). For lambda_s != 1 it differs from the lambda = 1 reverse SDE at first order
    (Gamma = 1 makes the position terms large enough to see)."""
    own, std = [], []
    for h in (4e-3, 2e-3, 1e-3):
        mean, cov = one_step_law("sps", {"split": "literal", "lambda_s": lam}, h, gamma=gamma)
        m_ref, c_ref = reverse_step_law(h, False, lam, gamma=gamma, lam_m=1.0)
        own.append(((mean - m_ref).norm().item(), (cov - c_ref).norm().item()))
        std.append(float((mean - reverse_step_law(h, False, gamma=gamma)[0]).norm()))
    for (m1, c1), (m2, c2) in zip(own, own[1:]):
        assert m1 / m2 > 3.3 and c1 / c2 > 3.3, own
    if lam != 1.0 and gamma == 1.0:
        assert std[1] / std[2] < 2.5, std


def test_literal_split_exact_law_converges_once_stable():
    """Exact output law, literal split: the error falls at first order once the steps resolve the expanding O
    (nu beta h small); 100 -> 400 NFE must cut it by more than 2x (first order: 4x)."""
    e100, e400 = exact_error("sps", (("split", "literal"),), 100), exact_error("sps", (("split", "literal"),), 400)
    assert e400 < 0.5 * e100, (e100, e400)


def test_literal_split_keeps_the_momentum_noise():
    with pytest.raises(SamplerError, match="lambda_m = 1"):
        get_sampler("sps", steps=3, split="literal", lambda_m=0.5)


@pytest.mark.parametrize("name", ["euler_maruyama", "sscs", "sps"])
def test_final_euler_step_is_the_reverse_drift_at_t_eps(name):
    """final_step='euler': z + eps (-F z + G G^T s(z, eps)), with F and G G^T written out from DESIGN.md section 2
    (not through process.reverse_drift); same NFE as the Tweedie ending."""
    p = PSLD()
    sf = GaussianMixture.ring(4).score_fn(p)
    s = get_sampler(name, nfe=12, final_step="euler", dtype="float64")
    assert s.nfe == get_sampler(name, nfe=12, dtype="float64").nfe == 12
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    eps = torch.tensor(p.t_eps_sample, dtype=F64)
    out = s.finish(CountedScore(sf, 5, "cpu"), p, z, eps)
    b, g, nu, mi, M = p.beta, p.gamma, p.nu, p.m_inv, p.mass
    F = 0.5 * b * torch.tensor([[-g, mi], [-1.0, -nu]], dtype=F64)
    GG = torch.diag(torch.tensor([b * g, b * M * nu], dtype=F64))
    zz = z.reshape(5, 2, 2)  # [batch, (x | m), coordinate]
    sc = sf(z, eps.expand(5)).reshape(5, 2, 2)
    ref = zz + float(eps) * (-torch.einsum("ij,bjc->bic", F, zz) + torch.einsum("ij,bjc->bic", GG, sc))
    torch.testing.assert_close(out, ref.reshape(5, 4), rtol=1e-12, atol=1e-14)


def test_authors_conventions_file_builds_its_samplers_and_process():
    """configs/samplers/psld_authors.yaml: every entry is a valid sampler config, the process is the CIFAR-10 SOTA
    PSLD (Gamma 0.02, nu 4.02: still critically damped, M^-1 = (Gamma - nu)^2 / 4 = 4) and its budgets follow
    N = N - 1 steps + the final step."""
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[1] / "configs/samplers/psld_authors.yaml"
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    proc = dict(cfg["process"])
    assert proc.pop("name") == "psld"
    p = PSLD(**proc)
    assert (p.gamma, p.nu, p.m_inv) == (0.02, 4.02, pytest.approx(4.0))
    for name, opts in cfg["samplers"].items():
        s = get_sampler(name, nfe=50, **opts)
        assert s.steps == 49 and s.options.final_step == "euler" and s.options.grid == "quadratic"
        assert getattr(s.options, "time_label", "start") == "start"  # EM evaluates at the step start by construction
        res = s.sample(GaussianMixture.ring(4).score_fn(p), p, (3, 2), seeds=range(3))
        assert res.nfe == 50


def test_default_sps_is_the_swept_best_and_sscs_labels_the_step_start():
    """Exact output laws (no Monte Carlo noise; issue 14 sweep, benchmarks/results/splitting.md): the default sps
    (lambda_m 0.8) beats the lambda_m = 1 reverse-SDE split at 20 and 50 NFE (there 149 / 72 vs 240 / 121 x 1e-3 on
    the data law; here against the Tweedie law, same ordering), and the default sscs is the authors' start label."""
    assert get_sampler("sps").options.lambda_m == 0.8 and get_sampler("sscs").options.time_label == "start"
    for nfe in (20, 50):
        assert exact_error("sps", (), nfe) < 0.8 * exact_error("sps", (("lambda_m", 1.0),), nfe)
