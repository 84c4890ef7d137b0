"""Convergence of the samplers on Gaussian data with the exact (oracle) score.

ODE samplers: the same prior draws mapped by the sampler vs by the exact probability-flow solution (closed form
on VE/VP, a tight scipy DOP853 solve on PSLD); the log-log slope of error vs steps is the order (1 Euler, 2 Heun).
SDE samplers: sample mean and covariance against the truth within a statistical tolerance. Slow part: every
registered sampler's moments, PSLD orders, and sliced Wasserstein on a ring of Gaussians vs its noise floor.
"""
from __future__ import annotations

import math

import pytest
import torch

from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP
from fastdiff.registry import SAMPLERS
from fastdiff.samplers import SamplerError, get_sampler, list_samplers
from gaussian_reference import COV, GAUSS, MU, edm_flow, exact_denoiser, first_draws, moment_errors, slope

PROCESSES = {"ve": lambda: VE(sigma_min=0.01, sigma_max=5.0), "vp": VP, "psld": PSLD}
SEEDS = list(range(12))
MOMENT_PROCESSES = {**PROCESSES, "ve": VE}  # sigma_max 50: the VE prior N(0, 50^2) matches p_T (sigma_max 5 biases the mean)
# adaptive samplers converge as their tolerance shrinks: the settings used here (published eps_abs, DESIGN.md 4).
# ggf: the paper's noise redraw on rejection biases the law in low dimension (2-D cov +40..100% at eps_rel 0.05 and
# no better at 0.01; pinned in test_ggf.py::test_bridge_removes_low_dimensional_bias), so convergence is checked with
# the Brownian-bridge rejection, at eps_rel 0.02 (0.05 leaves VP's covariance 3.5 SE off).
ADAPTIVE_OPTIONS = {"ggf": {"eps_rel": 0.02, "eps_abs": 0.0078, "noise_control": "bridge"}}


def pf_ode_scipy(process, z_T: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """Reference PF-ODE solution dz/dt = F z + 1/2 GG^T Sigma_t^-1 (z - m_t) for Gaussian data (DOP853, rtol 1e-11)."""
    from scipy.integrate import solve_ivp

    eye = torch.eye(2, dtype=torch.float64)
    n = z_T.shape[0]

    def rhs(t, y):
        tt = torch.tensor([t], dtype=torch.float64)
        F, GG = process.sde_coeffs(tt)
        a, L = process.marginal_coeffs(tt)
        m = torch.kron(a[0], MU)
        S = torch.kron(torch.outer(a[0], a[0]), COV) + torch.kron(L[0] @ L[0].T, eye)
        z = torch.from_numpy(y).reshape(n, -1)
        v = z @ torch.kron(F[0], eye).T + 0.5 * torch.linalg.solve(S, (z - m).T).T @ torch.kron(GG[0], eye).T
        return v.reshape(-1).numpy()

    sol = solve_ivp(rhs, (t0, t1), z_T.reshape(-1).numpy(), method="DOP853", rtol=1e-11, atol=1e-12)
    return torch.from_numpy(sol.y[:, -1]).reshape(n, -1)


def run(name: str, process, seeds, mixture=GAUSS, shape_tail=(2,), **kw):
    sampler = get_sampler(name, **kw)
    return sampler.sample(mixture.score_fn(process), process, (len(seeds), *shape_tail), seeds=seeds)


def edm_errors(name: str, process, steps: list[int], **options) -> list[float]:
    """EDM-view sampler vs the exact flow to its last sigma > 0 plus the exact final step x = D (the ODE path).

    The grid is the sampler's own (the default Karras grid equals Eq. 5, the others their definitions:
    test_fast_samplers.py::test_sigma_grids)."""
    x0 = first_draws(SEEDS, (2,))
    errs = []
    for n in steps:
        sampler = get_sampler(name, steps=n, dtype="float64", **options)
        sig = sampler.sigmas(process, torch.device("cpu")).tolist()
        ref = exact_denoiser(edm_flow(x0 * sig[0], sig[0], sig[-2]), sig[-2])
        res = sampler.sample(GAUSS.score_fn(process), process, (len(SEEDS), 2), seeds=SEEDS)
        errs.append((res.state - ref).norm(dim=1).mean().item())
    return errs


def t_space_errors(name: str, process, steps: list[int], grid: str = "uniform") -> list[float]:
    """PF-ODE in t from the prior draw to t_eps vs the exact solution (closed form in the EDM view, else scipy)."""
    T, te = float(process.T), float(process.t_eps_sample)
    z_T = process.prior_sample(first_draws(SEEDS, process.state_shape((1, 2))[1:]))
    if process.supports("edm_view"):
        s = lambda t: float(process.scale(torch.tensor([t], dtype=torch.float64)))  # noqa: E731
        sg = lambda t: float(process.sigma(torch.tensor([t], dtype=torch.float64)))  # noqa: E731
        ref = s(te) * edm_flow(z_T / s(T), sg(T), sg(te))
    else:
        ref = pf_ode_scipy(process, z_T, T, te)
    return [(run(name, process, SEEDS, steps=n, grid=grid, final_denoise=False, dtype="float64").state - ref)
            .norm(dim=1).mean().item() for n in steps]


# (sampler, options, process, order) on 20, 40, 80, 160 steps; the slope is fitted on the last three.
# Tolerance ORDER_TOL: adjacent orders differ by 1, so the bands p +- 0.35 never overlap and a solver one order off
# fails; the pre-asymptotic bias of the fitted slope measured on these cases is at most 0.23 (unipc order 3 on VE:
# 4.23; print them with -s). Grids are Karras (where the references and these slopes were measured) except where
# the asymptotic regime is not reached by 160 steps with errors far above rounding: the published-weight 3M on the
# Karras grid is still at slope 1.58 (its O(h^2) term is small there), so it is checked on the log-SNR grid (2.15). LMS and iPNDM are not listed: the first-order warm-up
# step and, for iPNDM, equal-step weights on an unequal grid leave them between 2 and 3.7 depending on the grid.
ORDER_CASES = [("ode_euler", {}, "ve", 1), ("ode_euler", {}, "vp", 1), ("ode_heun", {}, "ve", 2),
               ("ode_heun", {}, "vp", 2), ("edm_euler", {}, "ve", 1), ("edm_euler", {}, "vp", 1),
               ("edm_heun", {}, "ve", 2), ("edm_heun", {}, "vp", 2), ("dpmpp_2m", {}, "ve", 2),
               ("dpmpp_2m", {}, "vp", 2), ("dpmpp_3m", {"taylor_d2": True, "grid": "karras"}, "vp", 3),
               ("dpmpp_3m", {"taylor_d2": False, "grid": "logsnr"}, "vp", 2)] + [
               ("unipc", {"order": k, "grid": "karras"}, p, k + 1) for p in ("vp", "ve") for k in (1, 2, 3)] + [
               ("dpmpp_sde", {"eta": 0.0, "grid": "karras"}, p, 2) for p in ("vp", "ve")] + [
               ("deis", {"order": k, "grid": "karras"}, p, k) for p in ("vp", "ve") for k in (1, 2, 3)
               if (p, k) != ("ve", 3)]  # DEIS-3 on VE: errors 3.0e-4, 3.1e-5, 5.2e-6, 1.7e-6, the order-2 step
# before the final denoising dominates by 160 steps (slope 2.08 on the last three), as for LMS above
ORDER_TOL = 0.35


@pytest.mark.parametrize("name,options,pname,order", ORDER_CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}-{c[2]}" for c in ORDER_CASES])
def test_ode_samplers_have_their_order_on_the_ode_path(name, options, pname, order):
    process = PROCESSES[pname]()
    steps = [20, 40, 80, 160]
    if SAMPLERS.get(name).requires == "edm_view":
        errs = edm_errors(name, process, steps, **options)
    else:
        errs = t_space_errors(name, process, steps)
    p = slope(steps[1:], errs[1:])
    print(f"order {name} {options} {pname}: errors {['%.2e' % e for e in errs]} slope {p:.2f}")
    assert abs(p - order) < ORDER_TOL, (errs, p)


@pytest.mark.slow
@pytest.mark.parametrize("name,order,steps,grid", [("ode_euler", 1, [200, 400, 800, 1600], "uniform"),
                                                   ("ode_heun", 2, [20, 40, 80, 160], "karras"),
                                                   ("ode_heun", 2, [40, 80, 160, 320], "uniform")])
def test_ode_order_on_psld(name, order, steps, grid):
    """PSLD's PF-ODE is stiff near t = 0 (small momentum variance): the asymptotic order needs finer grids."""
    errs = t_space_errors(name, PROCESSES["psld"](), steps, grid)
    p = slope(steps[1:], errs[1:])
    print(f"order {name} psld {grid}: errors {['%.2e' % e for e in errs]} slope {p:.2f}")
    assert abs(p - order) < ORDER_TOL, (errs, p)


# ---- statistical convergence of the moments -----------------------------------------------------------------
# Moment tolerances. Each check is a z-statistic: 2 means + 3 covariance entries per case. Z_FAST: Bonferroni over
# the 6 default cases x 5 statistics at a family-wise false-failure rate of 1%: two-sided 0.01 / 30 per statistic
# -> z = 3.59. Power: with n = 800 the covariance SE of a variance is sqrt(2 / n) = 5% of it, so a 30% variance
# error sits at 6 SE and fails with probability Phi(6 - 3.6) > 99%; the mean SE is 3.5% of a standard deviation.
# Z_SLOW: the same at n = 2000 over every registered sampler x process (~60 cases x 5 statistics) -> z = 4.15; a 30%
# variance error is then 9.5 SE.
Z_FAST, N_FAST = 3.6, 800
Z_SLOW = 4.2


@pytest.mark.parametrize("pname", ["ve", "vp"])
@pytest.mark.parametrize("name", ["euler_maruyama", "pc", "edm_sde"])
def test_sde_samplers_moments_at_200_nfe(name, pname):
    process = MOMENT_PROCESSES[pname]()
    res = run(name, process, range(N_FAST), nfe=200)
    zm, zc = moment_errors(res.x, MU, COV)
    print(f"moments {name} {pname} nfe {res.nfe}: mean {zm:.2f} SE, cov {zc:.2f} SE")
    assert zm < Z_FAST and zc < Z_FAST, (zm, zc)


def convergence_cases() -> list:
    out = []
    for name in list_samplers():
        for pname, make in MOMENT_PROCESSES.items():
            if SAMPLERS.get(name).supports(make()):
                out.append(pytest.param(name, pname, id=f"{name}-{pname}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name,pname", convergence_cases())
def test_every_sampler_moments_converge(name, pname):
    """Mean and covariance within Z_SLOW standard errors at NFE 1000 (2000 samples), and no farther than at NFE 20
    (+2 SE: the two runs share their seeds, so their Monte Carlo errors largely cancel in the comparison)."""
    cls = SAMPLERS.get(name)
    process = MOMENT_PROCESSES[pname]()
    n = 2000
    if cls.adaptive:
        if name not in ADAPTIVE_OPTIONS:
            pytest.skip(f"no convergence tolerances known for adaptive sampler {name!r} (add them to ADAPTIVE_OPTIONS)")
        res = run(name, process, range(n), **ADAPTIVE_OPTIONS[name])
        zm, zc = moment_errors(res.x, MU, COV)
        print(f"moments {name} {pname} nfe {res.nfe}: mean {zm:.2f} SE, cov {zc:.2f} SE")
        assert zm < Z_SLOW and zc < Z_SLOW, (zm, zc)
        return
    high = 1000  # first-order schemes on VE (sigma 0.01..50) and on stiff PSLD need it for the Z_SLOW tolerance
    try:
        lo_res = run(name, process, range(n), nfe=20)
    except SamplerError:
        lo_res = None
    res = run(name, process, range(n), nfe=high)
    zm, zc = moment_errors(res.x, MU, COV)
    print(f"moments {name} {pname} nfe {res.nfe}: mean {zm:.2f} SE, cov {zc:.2f} SE")
    assert zm < Z_SLOW and zc < Z_SLOW, (zm, zc)
    if lo_res is not None:
        lo_m, lo_c = moment_errors(lo_res.x, MU, COV)
        assert max(zm, zc) <= max(lo_m, lo_c) + 2, ((lo_m, lo_c), (zm, zc))


# ---- sliced Wasserstein on a ring of Gaussians ----------------------------------------------------------------
def sliced_w2(a: torch.Tensor, b: torch.Tensor, n_proj: int = 256) -> float:
    """Sliced 2-Wasserstein distance between two equal-size point sets (fixed random directions)."""
    g = torch.Generator().manual_seed(0)
    th = torch.randn(a.shape[1], n_proj, generator=g, dtype=torch.float64)
    th = th / th.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a.double() @ th, 0)
    pb, _ = torch.sort(b.double() @ th, 0)
    return float(((pa - pb) ** 2).mean().sqrt())


RING = GaussianMixture.ring(8, 1.0, 0.1)
MINE = ["pc", "ode_euler", "ode_heun", "edm_sde", "dpmpp_2m", "euler_maruyama"]


def ring_cases() -> list:
    return [pytest.param(n, p, id=f"{n}-{p}") for n in MINE for p, make in PROCESSES.items()
            if SAMPLERS.get(n).supports(make())]


@pytest.mark.slow
@pytest.mark.parametrize("name,pname", ring_cases())
def test_ring_sliced_wasserstein_at_500_nfe_is_near_the_noise_floor(name, pname):
    n = 2000
    target = RING.sample(n, torch.Generator().manual_seed(10_000))
    floor = sum(sliced_w2(RING.sample(n, torch.Generator().manual_seed(10_001 + i)), target) for i in range(6)) / 6
    process = PROCESSES[pname]() if pname != "ve" else VE()  # the default VE (sigma_max 50) covers the ring
    res = run(name, process, range(n), mixture=RING, nfe=500)
    sw = sliced_w2(res.x, target)
    print(f"ring {name} {pname} nfe {res.nfe}: SW2 {sw:.4f}, noise floor {floor:.4f}")
    assert sw < 2 * floor, (sw, floor)


def test_sliced_w2_sees_a_shift():
    """The helper itself: a set vs a shifted copy has SW2 = |shift| / sqrt(d) on average over directions."""
    x = RING.sample(500, torch.Generator().manual_seed(1))
    shift = torch.tensor([0.3, 0.0], dtype=torch.float64)
    sw = sliced_w2(x + shift, x, n_proj=4000)
    assert math.isclose(sw, 0.3 / math.sqrt(2), rel_tol=0.05)
    assert sliced_w2(x, x) == 0.0
