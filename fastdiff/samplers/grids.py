"""Time grids for t-space samplers and sigma grids for EDM-view samplers (Karras et al. 2022)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..processes.base import Process

GRIDS = ("uniform", "quadratic", "karras", "logsnr")
SIGMA_GRIDS = ("karras", "logsnr", "uniform")  # the grids of EDM-view samplers (uniform = even in process time t)


def _invert_decreasing(fn: Callable[[Tensor], Tensor], target: Tensor, lo: float, hi: float, iters: int = 12,
                       knots: int = 256) -> Tensor:
    """Solve fn(t) = target for t in [lo, hi], fn smooth and decreasing in t, made of torch ops (float64).

    One vectorised evaluation on ``knots`` points (geometric from lo, where log-SNR is steep) brackets every target;
    linear interpolation in its bracket starts Newton's method (fn' by autograd), whose steps are kept inside the
    bracket (bisection when one leaves it) until a step is below fn's own rounding noise, or for ``iters`` steps
    (from a bracket ~8% wide, 3-4 steps reach that noise; the rest only wander inside it, as far from the true root
    as bisection's last-ulp answer is): ~5 evaluations where bisection needs ~60, and PSLD inverts its time grids
    on every run. Targets outside [fn(hi), fn(lo)] give the nearer end.
    """
    r = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-9, 0, knots - 1, dtype=torch.float64)])
    ts = (lo + (hi - lo) * r).to(target.device)
    ts[-1] = hi
    fs = torch.cummin(fn(ts).detach(), 0).values  # knots packed near lo may be out of order by rounding noise
    i = torch.searchsorted(-fs, -target).clamp(1, knots - 1)  # fs[i-1] > target >= fs[i] inside the range
    a, b, fa, fb = ts[i - 1], ts[i], fs[i - 1], fs[i]
    x = a + (b - a) * ((fa - target) / (fa - fb)).nan_to_num(0.5).clamp(0, 1)
    x = torch.where(target >= fs[0], ts[0], torch.where(target <= fs[-1], ts[-1], x))
    todo = (target < fs[0]) & (target > fs[-1])
    for _ in range(iters):
        if not bool(todo.any()):
            break
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            f = fn(xg)
            (df,) = torch.autograd.grad(f.sum(), xg)
        f = f.detach()
        above = f > target  # fn(x) too big -> t must be larger
        a, b = torch.where(todo & above, x, a), torch.where(todo & ~above, x, b)
        step = x - (f - target) / df
        x_next = torch.where((step >= a) & (step <= b), step, 0.5 * (a + b))
        # done: an exact hit, a step below fn's own rounding noise (~ulp(1 + |f|), i.e. that over |fn'| in t, or a
        # few ulps of t itself), or a bracket of two adjacent floats
        noise = 8e-16 * (x.abs() + (1 + f.abs()) / df.abs())
        done = (f == target) | ((x_next - x).abs() <= noise) | (torch.nextafter(a, b) >= b)
        x = torch.where(todo & (f != target), x_next, x)
        todo = todo & ~done
    return x


def t_of_log_snr(process: Process, lam: Tensor, t_lo: float, t_hi: float) -> Tensor:
    """Time with the given log-SNR (closed form for EDM-view processes, safeguarded Newton otherwise)."""
    if process.supports("edm_view"):
        return process.t_of_sigma(torch.exp(-0.5 * lam)).clamp(t_lo, t_hi)
    return _invert_decreasing(process.log_snr, lam, t_lo, t_hi)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """n noise levels from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho) (float64)."""
    if n < 1:
        raise ValueError(f"a Karras grid needs at least 1 point, got {n}")
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    return (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def sigma_grid(kind: str, process: Process, n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """n noise levels from sigma_max down to sigma_min (float64) for an EDM-view process.

    karras: even in sigma^(1/rho) (Karras et al. 2022, Eq. 5); logsnr: even in log sigma, i.e. in log-SNR
    (the grid DPM-Solver recommends, Lu et al. 2022); uniform: even in the process time t (DPM-Solver's
    "time_uniform"; on VE, where log sigma is linear in t, it equals logsnr).
    """
    if kind == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho)
    if n < 1:
        raise ValueError(f"a sigma grid needs at least 1 point, got {n}")
    i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    if kind == "logsnr":
        return torch.exp(math.log(sigma_max) + i * (math.log(sigma_min) - math.log(sigma_max)))
    if kind == "uniform":
        ends = process.t_of_sigma(torch.tensor([sigma_max, sigma_min], dtype=torch.float64))
        out = process.sigma(ends[0] + i * (ends[1] - ends[0]))
        out[0] = sigma_max  # exact end points (t_of_sigma round trip is only accurate to rounding)
        if n > 1:
            out[-1] = sigma_min
        return out
    raise ValueError(f"unknown sigma grid {kind!r}; allowed: {', '.join(SIGMA_GRIDS)}")


EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0  # Karras et al. 2022's noise range: the EDM-view samplers' defaults


def edm_sigma_range(process: Process, sigma_min: float = EDM_SIGMA_MIN,
                    sigma_max: float = EDM_SIGMA_MAX) -> tuple[float, float]:
    """The Karras defaults [0.002, 80] clipped to the range the process covers on [t_eps_sample, T]."""
    lo, hi = process.sigma_range()
    return max(sigma_min, lo), min(sigma_max, hi)


def time_grid(kind: str, process: Process, steps: int, t_eps: float | None = None, rho: float = 7.0,
              device: torch.device | str = "cpu") -> Tensor:
    """steps + 1 decreasing times from T to t_eps (float64).

    uniform: even in t; quadratic: t_i = T - (T - eps)(1 - (1 - i/N)^2), dense near t_eps; karras: even in
    sigma^(1/rho) with sigma = exp(-logSNR/2) (the EDM sigma on VE/VP); logsnr: even in log-SNR.
    """
    if steps < 1:
        raise ValueError(f"a time grid needs at least 1 step, got {steps}")
    T = float(process.T)
    eps = float(process.t_eps_sample if t_eps is None else t_eps)
    if not 0 < eps < T:
        raise ValueError(f"t_eps must lie in (0, T={T}), got {eps}")
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    if kind == "uniform":
        t = T - (T - eps) * i
    elif kind == "quadratic":
        t = T - (T - eps) * (1 - (1 - i) ** 2)
    elif kind in ("karras", "logsnr"):
        lam_hi = process.log_snr(torch.tensor([eps], dtype=torch.float64))  # log-SNR is large at small t
        lam_lo = process.log_snr(torch.tensor([T], dtype=torch.float64))
        if kind == "logsnr":
            lam = lam_lo + (lam_hi - lam_lo) * i
        else:
            sig = karras_sigmas(steps + 1, torch.exp(-0.5 * lam_hi).item(), torch.exp(-0.5 * lam_lo).item(), rho)
            lam = -2 * torch.log(sig)
        t = t_of_log_snr(process, lam, eps, T)
        t[0], t[-1] = T, eps
    else:
        raise ValueError(f"unknown grid {kind!r}; allowed: {', '.join(GRIDS)}")
    return t.to(device)
