"""Golden tests of the fast EDM-view solvers (DPM-Solver++ 3M / SDE forms, DPM++ 2S SDE, UniPC, iPNDM, LMS).

Every reference here is computed independently of the sampler code, on N(mu, C) data whose denoiser is exact:
- exponential Adams steps as the integral of e^{tau - h} times the Lagrange interpolant of the denoiser in
  lambda = -log sigma, by 40-point Gauss-Legendre quadrature (no phi functions, no divided differences);
- linear multistep steps as the quadrature of the Lagrange interpolant of dx̃/dsigma in sigma;
- the published update formulas written out (k-diffusion's t = -log sigma form) with each seed's own noise replayed.

The convergence orders (against the closed-form flow) are in test_sampler_convergence.py, the agreement with
k-diffusion's samplers on a fixed denoiser in test_fast_samplers_kdiffusion.py (bench env).

Tolerance of the trajectory comparisons (float64): quadrature error of a 40-point rule on e^{tau - h} P(tau) with
h <= 6 is below (h/2)^80 / 80! ~ 1e-80, so the difference is rounding only: ~1e-16 relative per operation,
amplified by the divided differences (1 / r <= ~10 on these grids) and by |x̃| <= ~80 at sigma_max, over <= 8
steps: ~1e-16 * 10 * 80 * 8 ~ 1e-12. atol = 1e-9 leaves 1000x margin and still fails on any wrong coefficient
(the smallest coefficient error tested, the half-weight D2 of the published 3M, moves the result by > 1e-4).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdiff.processes import VE, VP
from fastdiff.samplers import SamplerError, get_sampler
from fastdiff.samplers.grids import sigma_grid
from gaussian_reference import GAUSS, draws, edm_range, exact_denoiser, first_draws, karras

PROCESSES = {"ve": lambda: VE(sigma_min=0.01, sigma_max=5.0), "vp": VP}
SEEDS = list(range(6))
ATOL = 1e-9  # see the module docstring
GL_T, GL_W = np.polynomial.legendre.leggauss(40)
denoiser = exact_denoiser


def stream_of(seed: int, count: int) -> list[torch.Tensor]:
    """One sample's first ``count`` draws, each shaped [1, 2] (a one-row batch)."""
    return draws(seed, (1, 2), count)


def grid_of(process, steps: int) -> list[float]:
    """The default Karras grid on the clipped EDM range, then 0 (computed here, not by the sampler)."""
    return karras(steps, *edm_range(process)) + [0.0]


def lagrange(nodes: list[float], values: list[torch.Tensor], at: float) -> torch.Tensor:
    out = torch.zeros_like(values[0])
    for j, (nj, vj) in enumerate(zip(nodes, values)):
        basis = math.prod((at - nm) / (nj - nm) for m, nm in enumerate(nodes) if m != j)
        out = out + basis * vj
    return out


def exp_integral(lam0: float, h: float, nodes: list[float], values: list[torch.Tensor],
                 rate: float = 1.0) -> torch.Tensor:
    """int_0^h rate e^{-rate (h - tau)} P(lam0 + tau) dtau for the interpolant P through (nodes, values)."""
    taus, ws = 0.5 * h * (GL_T + 1), 0.5 * h * GL_W
    return sum(float(w) * rate * math.exp(-rate * (h - t)) * lagrange(nodes, values, lam0 + float(t))
               for t, w in zip(taus, ws))


def run(name: str, process, seeds=SEEDS, **kw):
    """The sampler on the Karras grid (that of grid_of) unless told otherwise, in float64."""
    sampler = get_sampler(name, dtype="float64", **{"grid": "karras", **kw})
    return sampler.sample(GAUSS.score_fn(process), process, (len(seeds), 2), seeds=seeds)


def per_seed(fn, seeds=SEEDS) -> torch.Tensor:
    """Stack fn(seed) [1, 2] over the seeds: each sample's reference uses its own noise stream."""
    return torch.cat([fn(s) for s in seeds])


# ---- grids --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pname", ["ve", "vp"])
def test_sigma_grids(pname):
    """karras = Eq. 5; logsnr: constant log-ratio; uniform: constant step in process time; all hit both ends."""
    process = PROCESSES[pname]()
    lo, hi, n = 0.02, 4.0, 7
    k = sigma_grid("karras", process, n, lo, hi, 7.0)
    torch.testing.assert_close(k, torch.tensor(karras(n, lo, hi), dtype=torch.float64), atol=1e-12, rtol=0)
    g = sigma_grid("logsnr", process, n, lo, hi)
    steps = torch.diff(torch.log(g))
    torch.testing.assert_close(steps, torch.full_like(steps, math.log(lo / hi) / (n - 1)), atol=1e-12, rtol=0)
    u = sigma_grid("uniform", process, n, lo, hi)
    dt = torch.diff(process.t_of_sigma(u))
    torch.testing.assert_close(dt, dt.mean().expand_as(dt), atol=1e-12, rtol=0)
    for grid in (k, g, u):
        assert math.isclose(float(grid[0]), hi, rel_tol=1e-12) and math.isclose(float(grid[-1]), lo, rel_tol=1e-12)
    if pname == "ve":  # log sigma is linear in t on VE: time-uniform is log-SNR-uniform
        torch.testing.assert_close(u, g, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="allowed"):
        sigma_grid("cosine", process, n, lo, hi)


# ---- DPM-Solver++ 3M and the SDE forms ----------------------------------------------------------------------
def exp_adams(sig: list[float], x: torch.Tensor, orders: list[int], eta: float = 0.0, noise=None) -> torch.Tensor:
    """Exponential Adams method: each step integrates the interpolant of the last orders[i] denoiser values."""
    lam = [-math.log(s) for s in sig[:-1]]
    ds = []
    for i in range(len(sig) - 1):
        ds.append(denoiser(x, sig[i]))
        if sig[i + 1] == 0:
            return ds[-1]
        h, k = math.log(sig[i] / sig[i + 1]), orders[i]
        x = sig[i + 1] / sig[i] * math.exp(-eta * h) * x + exp_integral(lam[i], h, lam[i + 1 - k:i + 1],
                                                                         ds[i + 1 - k:i + 1], 1.0 + eta)
        if eta > 0:
            x = x + sig[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * noise()
    raise AssertionError("the grid must end at 0")


def multistep_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    return [min(order, i + 1, steps - i) if lower_order_final else min(order, i + 1) for i in range(steps)]


@pytest.mark.parametrize("pname", ["ve", "vp"])
@pytest.mark.parametrize("lower_order_final", [True, False])
def test_dpmpp_3m_is_the_exponential_adams_method(pname, lower_order_final):
    process, steps = PROCESSES[pname](), 7
    sig = grid_of(process, steps)
    orders = multistep_orders(steps, 3, lower_order_final)
    ref = exp_adams(sig, first_draws(SEEDS, (2,)) * sig[0], orders)
    res = run("dpmpp_3m", process, steps=steps, lower_order_final=lower_order_final, taylor_d2=True)
    torch.testing.assert_close(res.state, ref, atol=ATOL, rtol=0)
    published = run("dpmpp_3m", process, steps=steps, lower_order_final=lower_order_final, taylor_d2=False)
    assert (published.state - ref).abs().max() > 1e-4  # the half-weight D2 is a different (second-order) method


@pytest.mark.parametrize("eta", [1.0, 0.4])
def test_dpmpp_3m_sde_is_the_stochastic_exponential_adams_method(eta):
    """Lu et al. 2022 SDE form: rate (1 + eta), decay e^{-eta h}, noise sigma' sqrt(1 - e^{-2 eta h}) per step."""
    process, steps = PROCESSES["vp"](), 6
    sig = grid_of(process, steps)

    def one(seed):
        stream = iter(stream_of(seed, steps + 1))
        return exp_adams(sig, next(stream) * sig[0], multistep_orders(steps, 3, True), eta, lambda: next(stream))

    res = run("dpmpp_3m_sde", process, steps=steps, eta=eta, taylor_d2=True)
    torch.testing.assert_close(res.state, per_seed(one), atol=ATOL, rtol=0)


def test_dpmpp_2m_sde_is_the_published_update():
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, Alg. for eta = 1; midpoint form, k-diffusion's default):
    x̃' = (sigma'/sigma) e^{-h} x̃ + (1 - e^{-2h}) D + (1 - e^{-2h}) (D - D_prev) / (2 r)
          + sigma' sqrt(1 - e^{-2h}) z."""
    process, steps = PROCESSES["vp"](), 6
    sig = grid_of(process, steps)

    def one(seed):
        stream = stream_of(seed, steps + 1)
        x, d_prev, h_prev = stream[0] * sig[0], None, None
        for i in range(steps):
            d = denoiser(x, sig[i])
            if sig[i + 1] == 0:
                return d
            h = math.log(sig[i] / sig[i + 1])
            x = sig[i + 1] / sig[i] * math.exp(-h) * x + (1 - math.exp(-2 * h)) * d
            if d_prev is not None:
                x = x + (1 - math.exp(-2 * h)) * (d - d_prev) / (2 * h_prev / h)
            x = x + sig[i + 1] * math.sqrt(1 - math.exp(-2 * h)) * stream[i + 1]
            d_prev, h_prev = d, h
        raise AssertionError

    res = run("dpmpp_2m_sde", process, steps=steps)
    torch.testing.assert_close(res.state, per_seed(one), atol=ATOL, rtol=0)
    # eta = 0 is DPM-Solver++(2M) itself (its update is checked in test_baseline_samplers.py)
    ode = run("dpmpp_2m", process, steps=steps).state
    assert torch.equal(run("dpmpp_2m_sde", process, steps=steps, eta=0.0).state, ode)


# ---- DPM++ 2S SDE -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eta,r", [(1.0, 0.5), (0.5, 1 / 3), (0.0, 0.5)])
def test_dpmpp_sde_is_the_published_update(eta, r):
    """k-diffusion's sample_dpmpp_sde in its t = -log sigma form, with the Brownian-path noise of two draws."""
    process, steps = PROCESSES["vp"](), 5
    sig = grid_of(process, steps)

    def ancestral(a, b):
        up = min(b, eta * math.sqrt(b**2 * (a**2 - b**2) / a**2))
        return math.sqrt(b**2 - up**2), up

    def one(seed):
        stream = iter(stream_of(seed, 2 * steps + 1))
        x = next(stream) * sig[0]
        for i in range(steps):
            d = denoiser(x, sig[i])
            if sig[i + 1] == 0:
                return x + (x - d) / sig[i] * (0 - sig[i])  # Euler to 0 = D
            t, t_next = -math.log(sig[i]), -math.log(sig[i + 1])
            s = t + r * (t_next - t)
            xa, xb = (next(stream), next(stream)) if eta > 0 else (0.0, 0.0)
            w_s, w_n = math.exp(-t) - math.exp(-s), math.exp(-s) - math.exp(-t_next)  # Brownian time in sigma
            xi1, xi2 = xa, (math.sqrt(w_s) * xa + math.sqrt(w_n) * xb) / math.sqrt(w_s + w_n)
            sd, su = ancestral(math.exp(-t), math.exp(-s))
            x2 = sd / math.exp(-t) * x - math.expm1(t + math.log(sd)) * d + su * xi1
            d2 = denoiser(x2, math.exp(-s))
            sd, su = ancestral(math.exp(-t), math.exp(-t_next))
            dd = (1 - 1 / (2 * r)) * d + 1 / (2 * r) * d2
            x = sd / math.exp(-t) * x - math.expm1(t + math.log(sd)) * dd + su * xi2
        raise AssertionError

    res = run("dpmpp_sde", process, steps=steps, eta=eta, r=r)
    assert res.nfe == 2 * steps - 1
    torch.testing.assert_close(res.state, per_seed(one), atol=ATOL, rtol=0)


# ---- UniPC --------------------------------------------------------------------------------------------------
def unipc_reference(sig: list[float], x: torch.Tensor, order: int, variant: str, corrector: bool) -> torch.Tensor:
    """Zhao et al. 2023 with data prediction. UniP-p (p >= 3) and UniC-p (p >= 2) solve the moment conditions
    R rho = b exactly, so they are the exponential integral of the interpolant through p (predictor) and p + 1
    (corrector, incl. the new point) denoiser values; UniP-2 and UniC-1 are the simplified rho = 1/2 forms,
    x̃ = base - B(h) / 2 * difference, with B(h) = -h (bh1) or e^{-h} - 1 (bh2)."""
    n, lam, ds = len(sig) - 1, [-math.log(s) for s in sig[:-1]], [denoiser(x, sig[0])]
    for i in range(n):
        if sig[i + 1] == 0:
            return ds[-1]
        p = min(order, i + 1, n - i)
        h = math.log(sig[i] / sig[i + 1])
        bh = -h if variant == "bh1" else math.expm1(-h)
        base = sig[i + 1] / sig[i] * x + (1 - math.exp(-h)) * ds[-1]
        if p == 1:
            pred = base
        elif p == 2:
            pred = base - bh / 2 * (ds[-2] - ds[-1]) * h / (lam[i - 1] - lam[i])
        else:
            pred = sig[i + 1] / sig[i] * x + exp_integral(lam[i], h, lam[i + 1 - p:i + 1], ds[i + 1 - p:i + 1])
        d_new = denoiser(pred, sig[i + 1])
        if corrector and sig[i + 2] > 0:
            if p == 1:
                x = base - bh / 2 * (d_new - ds[-1])
            else:
                x = sig[i + 1] / sig[i] * x + exp_integral(lam[i], h, lam[i + 1 - p:i + 1] + [-math.log(sig[i + 1])],
                                                           ds[i + 1 - p:i + 1] + [d_new])
        else:
            x = pred
        ds.append(d_new)
    raise AssertionError


@pytest.mark.parametrize("pname", ["ve", "vp"])
@pytest.mark.parametrize("order,variant,corrector", [(1, "bh2", True), (2, "bh1", True), (2, "bh2", True),
                                                     (3, "bh1", True), (3, "bh2", True), (3, "bh2", False)])
def test_unipc_matches_the_interpolatory_reference(pname, order, variant, corrector):
    process, steps = PROCESSES[pname](), 8
    sig = grid_of(process, steps)
    x0 = first_draws(SEEDS, (2,)) * sig[0]
    res = run("unipc", process, steps=steps, order=order, variant=variant, corrector=corrector,
              sigma_min=0.002)  # grid_of's EDM range; the budget-aware default end is tested below
    assert res.nfe == steps
    torch.testing.assert_close(res.state, unipc_reference(sig, x0, order, variant, corrector), atol=ATOL, rtol=0)


@pytest.mark.parametrize("pname", ["ve", "vp"])
def test_unipc_default_end_follows_the_budget(pname):
    """sigma_min=None: the last nonzero sigma is 0.01 up to 20 NFE, EDM's 0.002 beyond, clipped to the process's
    range (VE's floor is sigma(t_eps_sample) = 0.01); an explicit sigma_min wins."""
    process = PROCESSES[pname]()
    floor = edm_range(process)[0]
    for nfe, want in [(5, 0.01), (20, 0.01), (21, 0.002), (100, 0.002)]:
        sig = get_sampler("unipc", nfe=nfe).sigmas(process, torch.device("cpu"))
        assert float(sig[-1]) == 0.0 and float(sig[-2]) == pytest.approx(max(want, floor), rel=1e-9), (nfe, sig)
    sig = get_sampler("unipc", nfe=8, sigma_min=0.05).sigmas(process, torch.device("cpu"))
    assert float(sig[-2]) == pytest.approx(0.05, rel=1e-9)


# ---- linear multistep in sigma ------------------------------------------------------------------------------
AB = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


@pytest.mark.parametrize("pname", ["ve", "vp"])
@pytest.mark.parametrize("name,order", [("ipndm", 4), ("ipndm", 2), ("lms", 4), ("lms", 3)])
def test_linear_multistep_in_sigma(pname, name, order):
    """iPNDM (Zhang & Chen 2022): equal-step Adams-Bashforth weights on the actual steps; LMS: the exact integral in
    sigma of the Lagrange interpolant of the last ``order`` slopes d = (x̃ - D) / sigma (Gauss-Legendre here)."""
    process, steps = PROCESSES[pname](), 7
    sig = grid_of(process, steps)
    x = first_draws(SEEDS, (2,)) * sig[0]
    slopes = []
    for i in range(steps):
        slopes.append((x - denoiser(x, sig[i])) / sig[i])
        k = min(order, i + 1)
        if name == "ipndm":
            x = x + (sig[i + 1] - sig[i]) * sum(c * d for c, d in zip(AB[k], reversed(slopes[-k:])))
        else:
            taus, ws = sig[i] + 0.5 * (sig[i + 1] - sig[i]) * (GL_T + 1), 0.5 * (sig[i + 1] - sig[i]) * GL_W
            x = x + sum(float(w) * lagrange(sig[i + 1 - k:i + 1], slopes[-k:], float(t)) for t, w in zip(taus, ws))
    res = run(name, process, steps=steps, order=order)
    torch.testing.assert_close(res.state, x, atol=ATOL, rtol=0)


@pytest.mark.parametrize("pname", ["ve", "vp"])
@pytest.mark.parametrize("order,lower_order_final", [(3, True), (3, False), (2, False), (1, True)])
def test_deis_is_adams_in_log_sigma(pname, order, lower_order_final):
    """DEIS tAB (Zhang & Chen 2022): x̃ += int_{sigma_i}^{sigma_i+1} P(log sigma) dsigma, P the Lagrange
    interpolant in u = log sigma of the last ``order`` slopes eps = (x̃ - D) / sigma. Reference: the same integral by
    Gauss-Legendre quadrature in u (dsigma = e^u du), the step to sigma = 0 over u in [log sigma_N - 60, log
    sigma_N] (the part below is < e^-60 |P| ~ 1e-24, far under ATOL); lower_order_final makes the last two steps
    orders 1 and <= 2 (the last one is then the Tweedie denoising x̃ - sigma eps = D)."""
    process, steps = PROCESSES[pname](), 7
    sig = grid_of(process, steps)
    x = first_draws(SEEDS, (2,)) * sig[0]
    slopes: list[torch.Tensor] = []
    for i in range(steps):
        slopes.append((x - denoiser(x, sig[i])) / sig[i])
        k = min(order, i + 1, steps - i) if lower_order_final else min(order, i + 1)
        u0 = math.log(sig[i])
        u1 = math.log(sig[i + 1]) if sig[i + 1] > 0 else u0 - 60.0
        us, ws = u0 + 0.5 * (u1 - u0) * (GL_T + 1), 0.5 * (u1 - u0) * GL_W
        nodes = [math.log(v) for v in sig[i + 1 - k:i + 1]]
        x = x + sum(float(w) * math.exp(float(u)) * lagrange(nodes, slopes[-k:], float(u)) for u, w in zip(us, ws))
    res = run("deis", process, steps=steps, order=order, lower_order_final=lower_order_final)
    assert res.nfe == steps
    torch.testing.assert_close(res.state, x, atol=ATOL, rtol=0)


def test_deis_weights_integrate_polynomials_in_log_sigma_exactly():
    """The closed-form weights against the antiderivative of sigma * (log sigma)^2 (exact for degree < 3 nodes),
    including the step to sigma = 0, where int_0^b (log s)^2 ds = b ((log b)^2 - 2 log b + 2)."""
    from fastdiff.samplers.deis import deis_weights

    nodes, f = [0.5, 1.3, 3.0], lambda s: math.log(s) ** 2
    prim = lambda b: b * (math.log(b) ** 2 - 2 * math.log(b) + 2)  # noqa: E731
    for target in (0.2, 0.0):
        w = deis_weights(nodes, target)
        exact = (prim(target) if target > 0 else 0.0) - prim(nodes[0])
        assert abs(sum(wj * f(s) for wj, s in zip(w, nodes)) - exact) < 1e-12  # float64 rounding of O(1) terms


@pytest.mark.parametrize("name,kw", [("unipc", {"order": 5}), ("ipndm", {"order": 0}), ("lms", {"order": 5}),
                                     ("dpmpp_2m_sde", {"eta": -1.0}), ("dpmpp_3m_sde", {"s_noise": -0.5}),
                                     ("dpmpp_sde", {"r": 0.0}), ("unipc", {"variant": "bh3"}),
                                     ("dpmpp_3m", {"grid": "cosine"}), ("deis", {"order": 5})])
def test_bad_options_are_one_line_errors(name, kw):
    with pytest.raises((SamplerError, ValueError, TypeError)) as err:
        get_sampler(name, steps=4, **kw)
    assert "\n" not in str(err.value)
