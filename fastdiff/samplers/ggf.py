"""Gotta Go Fast: the adaptive step-size reverse-SDE solver of Jolicoeur-Martineau et al. (2021).

Per sample: state x, previous EM proposal x'_prev (starts at the prior draw), time t (starts at T), step h.
One attempt draws one z from the sample's own noise stream and makes two score evaluations:

    x'  = x - h F(x, t) + g(t) sqrt(h) z                                   (Euler-Maruyama)
    x'' = 1/2 (x' + x - h F(x', t - h) + g(t - h) sqrt(h) z)               (stochastic improved Euler)
    delta = max(eps_abs, eps_rel max(|x'|, |x'_prev|))                      (elementwise)
    E2 = sqrt(mean(((x' - x'') / delta)^2))                                 (RMS over every state coordinate)

with F = f - G G^T score (``process.reverse_drift``). Accept iff E2 <= 1: x <- x'' (extrapolation),
x'_prev <- x', t <- t - h. Accepted or not, h <- min(t - t_eps, theta h E2^(-r)). A sample stops at t_eps and
gets the final Tweedie denoise (1 NFE). For PSLD the state includes the momentum, and E2 is taken over the whole
state (data and momentum coordinates alike). eps_abs = 0.0078 is one 8-bit level for data in [-1, 1]; scale it
with the data range (e.g. 0.0039 for data in [0, 1]).

Ablations (off the default path): ``norm="linf"`` (max instead of RMS), ``extrapolation=False`` (accept x'),
``use_prev=False`` (delta from |x'| only), ``drift_only_heun=True`` (x'' uses g(t) instead of g(t - h), i.e.
x'' = x - h/2 (F(x, t) + F(x', t - h)) + g(t) sqrt(h) z: Heun on the drift, the noise added once; then
x' - x'' is the drift difference alone), and ``noise_control``:

- ``"redraw"`` (the paper): a rejected attempt's z is thrown away and the retry draws a fresh one. Acceptance
  depends on z and on x', so the accepted increments are not Gaussian; with few coordinates this biases the
  output (see benchmarks/ggf_bench.py). In high dimension the RMS averages the selection away.
- ``"bridge"``: every sample has one Brownian path W, revealed lazily. An attempt from t to s = t - h uses the
  path increment W(s) - W(t), drawn from the Brownian bridge between the nearest already-revealed points (or a
  free Gaussian increment beyond them); a rejected attempt keeps its point on the path, so the retry with a
  smaller h refines the same path (Brownian-path-preserving rejection, Gaines & Lyons 1997). The accepted
  increments are pieces of one Brownian motion, so rejection selects nothing; the only error left is the
  pathwise discretisation error, which vanishes with the tolerance. Same cost: one draw per attempt.

NFE: ``SampleResult.nfe`` is ours (the per-sample mean of counted evaluations, rejected attempts and the final
denoise included). The paper reports 2 x the loop iterations of the slowest sample of the batch, without the final
denoise (its batch loop runs until every sample is done); ``info["nfe_published"]`` gives that figure, to compare with
its 329/274/179/147 (CIFAR-10 VP, eps_rel 0.01/0.02/0.05/0.1).

Safeguards (not in the paper): ``max_nfe`` caps each sample's NFE (final denoise included); a sample that would
exceed it stops where it is, is denoised at its current t, is flagged in ``info["stopped"]`` and named (by seed) in
a warning. A sample whose E2 is not finite (NaN/inf in the score or the proposals) is stopped and set to NaN, so
``Sampler.sample`` raises ``SamplingNaNError`` naming its seed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..processes.base import Process, append_dims
from . import register_sampler
from .adaptive import AdaptiveSampler
from .base import CountedScore, SamplerError, denoise_data_part
from .noise import NoiseSource

DONE_TOL = 1e-10  # a sample is finished when t - t_eps <= DONE_TOL * T


class BrownianPaths:
    """One lazily revealed Brownian path per sample; revealed future points survive rejections.

    ``times[i]`` (unordered, free slots = -inf) and ``values[i]`` hold the points (time, W(time) - W(t_i)) already
    revealed below sample i's current time t_i. An increment W(s) - W(t_i) is drawn from the Brownian bridge between
    the nearest revealed neighbours of s (a free Gaussian increment beyond the last one), so the path stays one
    Brownian motion whatever steps are tried (Gaines & Lyons 1997). Vectorised over samples.
    """

    def __init__(self, n: int, event_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.times = torch.full((n, 2), -math.inf, dtype=torch.float64, device=device)
        self.values = torch.zeros((n, 2, *event_shape), dtype=dtype, device=device)

    def increment(self, rows: Tensor, t: Tensor, s: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        """(W(s) - W(t), whether s was already revealed) for samples ``rows``; t > s float64 [n], xi ~ N(0, I)."""
        times, values = self.times[rows], self.values[rows]
        ar = torch.arange(len(rows), device=times.device)
        above = times >= s[:, None]
        left_t, li = torch.where(above, times, math.inf).min(1)
        right_t, ri = torch.where(above, -math.inf, times).max(1)
        has_left, has_right = torch.isfinite(left_t), torch.isfinite(right_t)
        left_t = torch.where(has_left, left_t, t)
        left_w = values[ar, li] * append_dims(has_left, xi.ndim).to(xi.dtype)
        span = torch.where(has_right, left_t - right_t, torch.ones_like(t))
        lam = torch.where(has_right, (left_t - s) / span, torch.zeros_like(t))
        var = torch.where(has_right, (left_t - s) * (s - right_t) / span, left_t - s).clamp_min(0)
        bridge = left_w + append_dims(lam, xi.ndim).to(xi.dtype) * (values[ar, ri] - left_w)
        w = bridge + append_dims(var.sqrt(), xi.ndim).to(xi.dtype) * xi
        return w, has_left & (left_t == s)

    def settle(self, rows: Tensor, s: Tensor, w: Tensor, accepted: Tensor, known: Tensor) -> None:
        """Accepted samples move to s (points at or above s dropped, the rest re-based); rejected ones keep (s, w)."""
        acc = accepted & torch.isfinite(self.times[rows]).any(1)
        if acc.any():
            r, sa = rows[acc], s[acc]
            keep = self.times[r] < sa[:, None]
            self.times[r] = torch.where(keep, self.times[r], -math.inf)
            self.values[r] = (self.values[r] - w[acc][:, None]) * append_dims(keep, w.ndim + 1).to(w.dtype)
        new = ~accepted & ~known
        if new.any():
            r = rows[new]
            free = ~torch.isfinite(self.times[r])
            if not free.any(1).all():
                self.times = torch.cat([self.times, torch.full_like(self.times, -math.inf)], 1)
                self.values = torch.cat([self.values, torch.zeros_like(self.values)], 1)
                free = ~torch.isfinite(self.times[r])
            slot = free.to(torch.int8).argmax(1)
            self.times[r, slot] = s[new]
            self.values[r, slot] = w[new]

    @property
    def depth(self) -> int:
        """Most revealed future points any sample holds now."""
        return int(torch.isfinite(self.times).sum(1).max())


def published_nfe(attempts: Tensor) -> int:
    """The paper's NFE: 2 x loop iterations of the slowest sample (its batch loop waits for it), no final denoise."""
    return 2 * int(attempts.max()) if attempts.numel() else 0


@register_sampler("ggf")
class GottaGoFast(AdaptiveSampler):
    """Adaptive stochastic improved-Euler solver with extrapolation and scaled l2 error (Jolicoeur-Martineau et al. 2021)."""

    stochastic = True
    knobs = "eps_rel (speed/quality, e.g. 0.01-0.1) and max_nfe (hard cap per sample)"

    @dataclass
    class Options(AdaptiveSampler.Options):
        eps_abs: float = 0.0078
        eps_rel: float = 0.05
        theta: float = 0.9
        r: float = 0.9
        h_init: float = 0.01
        t_eps: float | None = None
        final_denoise: bool = True
        max_nfe: int = 10000
        norm: Literal["l2_scaled", "linf"] = "l2_scaled"
        extrapolation: bool = True
        use_prev: bool = True
        drift_only_heun: bool = False
        noise_control: Literal["redraw", "bridge"] = "redraw"

    @classmethod
    def suite_kwargs(cls) -> dict[str, Any]:
        """Loose tolerances so the shared sampler suite runs fast (the suite's oracle is slow with per-sample t)."""
        return {"eps_rel": 0.5, "eps_abs": 0.2}

    def _check_options(self) -> None:
        o = self.options
        checks = [(o.eps_abs > 0, f"eps_abs must be > 0, got {o.eps_abs}"),
                  (o.eps_rel >= 0, f"eps_rel must be >= 0, got {o.eps_rel}"),
                  (0 < o.theta <= 1, f"theta must be in (0, 1], got {o.theta}"),
                  (o.r > 0, f"r must be > 0, got {o.r}"),
                  (o.h_init > 0, f"h_init must be > 0, got {o.h_init}"),
                  (o.t_eps is None or o.t_eps > 0, f"t_eps must be > 0 (or None for the process default), got {o.t_eps}"),
                  (o.max_nfe >= 2 + int(o.final_denoise),
                   f"max_nfe must be >= {2 + int(o.final_denoise)} (one attempt + final denoise), got {o.max_nfe}")]
        for ok, msg in checks:
            if not ok:
                raise SamplerError(f"sampler {self.name!r}: {msg}")

    @property
    def min_nfe(self) -> int:
        """One attempt (2 NFE) plus the final denoise."""
        return 2 + int(self.options.final_denoise)

    # ---- sampling --------------------------------------------------------------------------------------
    def run(self, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> tuple[Tensor, dict[str, Any]]:
        o = self.options
        T = float(process.T)
        t_eps = float(process.t_eps_sample if o.t_eps is None else o.t_eps)
        if not 0 < t_eps < T:
            raise SamplerError(f"sampler {self.name!r}: t_eps must be in (0, T = {T}), got {t_eps}")
        x = self.prior(process, shape, noise, device)
        n = x.shape[0]
        f64 = dict(dtype=torch.float64, device=device)
        x_prev = x.clone()
        t = torch.full((n,), T, **f64)
        h = torch.full((n,), min(o.h_init, T - t_eps), **f64)
        accepted = torch.zeros(n, dtype=torch.int64, device=device)
        rejected = torch.zeros_like(accepted)
        stopped = torch.zeros(n, dtype=torch.bool, device=device)
        failed = torch.zeros_like(stopped)
        paths = BrownianPaths(n, x.shape[1:], x.dtype, device) if o.noise_control == "bridge" else None
        spend_cap = o.max_nfe - int(o.final_denoise)
        while True:
            running = (t - t_eps > DONE_TOL * T) & ~stopped & ~failed
            over = running & (2 * (accepted + rejected) + 2 > spend_cap)
            stopped |= over
            running &= ~over
            if not running.any():
                break
            rows = running.nonzero().squeeze(1)
            err, x1, x2, dw, s, known = self._attempt(score, process, x[rows], x_prev[rows], t[rows], h[rows],
                                                      rows, noise, paths)
            finite = torch.isfinite(err)
            ok = finite & (err <= 1)
            if paths is not None:
                paths.settle(rows, s, dw, ok, known)
            acc_rows = rows[ok]
            x[acc_rows] = (x2 if o.extrapolation else x1)[ok]
            x_prev[acc_rows] = x1[ok]
            t[acc_rows] = s[ok]
            accepted[rows] += ok.long()
            rejected[rows] += (~ok).long()
            new_h = torch.minimum(t[rows] - t_eps, o.theta * h[rows] * err.pow(-o.r)).clamp_min(0)
            h[rows] = torch.where(finite, new_h, h[rows])
            bad = rows[~finite]
            failed[bad] = True
            x[bad] = float("nan")
        if stopped.any():
            seeds = [noise.seeds[i] for i in stopped.nonzero().flatten().tolist()]
            shown = ", ".join(map(str, seeds[:20])) + (" ..." if len(seeds) > 20 else "")
            warnings.warn(f"sampler {self.name!r}: {len(seeds)} sample(s) reached max_nfe={o.max_nfe} before "
                          f"t_eps and were denoised at their current t (info['stopped'], info['t_final']); "
                          f"seeds: {shown}", RuntimeWarning, stacklevel=3)
        x = self._finish(score, process, x, t)
        info = {"accepted": accepted.cpu(), "rejected": rejected.cpu(), "stopped": stopped.cpu(),
                "t_final": t.cpu(), "nfe_published": published_nfe(accepted + rejected)}
        return x, info

    def _attempt(self, score: CountedScore, process: Process, x: Tensor, x_prev: Tensor, t: Tensor, h: Tensor,
                 rows: Tensor, noise: NoiseSource, paths: BrownianPaths | None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One EM + improved-Euler attempt for the rows; returns (E2, x', x'', increment, t - h, t - h revealed)."""
        o = self.options
        s = t - h
        xi = noise.randn(x.shape[1:], rows, dtype=x.dtype).to(x.device)
        if paths is None:
            dw, known = append_dims(h.sqrt(), x.ndim).to(x.dtype) * xi, torch.zeros_like(rows, dtype=torch.bool)
        else:
            dw, known = paths.increment(rows, t, s, xi)
        hx = append_dims(h, x.ndim).to(x.dtype)
        g1 = process.diffusion(x, t)
        x1 = x - hx * process.reverse_drift(x, t, score(x, t, rows)) + g1 * dw
        g2 = g1 if o.drift_only_heun else process.diffusion(x1, s)
        x2 = 0.5 * (x1 + x - hx * process.reverse_drift(x1, s, score(x1, s, rows)) + g2 * dw)
        ref = torch.maximum(x1.abs(), x_prev.abs()) if o.use_prev else x1.abs()
        delta = (o.eps_rel * ref).clamp_min(o.eps_abs)
        ratio = ((x1 - x2) / delta).flatten(1)
        if o.norm == "l2_scaled":
            err = ratio.double().square().mean(1).sqrt()
        else:
            err = ratio.double().abs().amax(1)
        return err, x1, x2, dw, s, known

    def _finish(self, score: CountedScore, process: Process, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie denoising at each sample's final t (1 NFE) when final_denoise is on; momentum is kept."""
        return denoise_data_part(score, process, x, t) if self.options.final_denoise else x
