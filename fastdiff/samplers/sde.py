"""Reverse-SDE samplers: Euler–Maruyama and predictor–corrector (Song et al. 2021)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..processes.base import Process, append_dims, block_cholesky
from . import register_sampler
from .base import CountedScore, SamplerError, TimeGridSampler
from .noise import NoiseSource

SNR_VE, SNR_OTHER = 0.16, 0.01  # Song et al. 2021: r = 0.16 for VE (CIFAR-10), 0.01 for VP


@register_sampler("euler_maruyama")
class EulerMaruyama(TimeGridSampler):
    """Euler–Maruyama on the reverse-time SDE (Song et al. 2021)."""

    stochastic = True
    default_steps = 100

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        for i in range(len(ts) - 1):
            t, h = ts[i], ts[i] - ts[i + 1]
            drift = process.reverse_drift(z, t, score(z, t))
            z = z - h * drift + process.diffusion(z, t) * torch.sqrt(h) * noise.randn_like(z)
        return z


def has_unit_mean(process: Process) -> bool:
    """True when the marginal mean coefficient of the data is 1 at T (variance exploding)."""
    a, _ = process.marginal_coeffs(torch.tensor([float(process.T)], dtype=torch.float64))
    return abs(float(a[0, 0]) - 1.0) < 1e-9


def reverse_diffusion_step(process: Process, z: Tensor, score: Tensor, t: Tensor, t_next: Tensor,
                           xi: Tensor) -> Tensor:
    """Reverse-diffusion predictor (Song et al. 2021, App. E): z <- z - f_d(z) + Q score + chol(Q) xi.

    The forward discretisation is the exact kernel z_t = A z_{t_next} + N(0, Q), i.e. f_d(z) = (A - I) z.
    """
    A, Q = process.transition_coeffs(t_next.reshape(1), t.reshape(1))
    eye = torch.eye(process.k, dtype=A.dtype, device=A.device).expand_as(A)
    kick = process.apply(block_cholesky(Q), xi)  # chol(Q) xi
    return process.apply(2 * eye - A, z) + process.apply(Q, score) + kick


@register_sampler("pc")
class PredictorCorrector(TimeGridSampler):
    """Predictor–corrector sampler (Song et al. 2021, Alg. 2-5): reverse-diffusion predictor + Langevin corrector.

    Order (default ``corrector_first=False``): each step predicts t_i -> t_{i+1}, then runs ``n_corrector``
    Langevin steps at t_{i+1}, so the corrector refines the marginal the predictor just reached (the last one
    acts at t_eps, right before the Tweedie step). ``corrector_first=True`` is score_sde's loop order
    (correct at t_i, then predict). Langevin step size (alpha = 1), ``step_size``:
    "kernel" (default): eps = 2 snr^2 / mean(diag Sigma_t|0^-1), i.e. Song et al.'s rule 2 (snr ||xi|| / ||score||)^2
    with ||xi||^2 -> D and ||score||^2 -> its perturbation-kernel bound tr(Sigma_t|0^-1): the same for every
    sample, deterministic in t. "per_sample": the rule with each sample's own norms (score_sde averages the norms
    over the batch, which would break batch invariance); its state-dependent step biases the Langevin chain,
    strongly in low dimension (a ratio of chi^2_d variables: unusable on 2-D data, inflated covariance in 16-D)
    and less as d grows (images). ``snr=None`` resolves to 0.16 on variance-exploding processes (marginal mean
    coefficient 1) and 0.01 otherwise (VP, PSLD). ``predictor="euler_maruyama"`` swaps the reverse-diffusion
    predictor for an EM step (pc with n_corrector=0 is then euler_maruyama exactly).
    """

    stochastic = True
    default_steps = 100

    @dataclass
    class Options(TimeGridSampler.Options):
        n_corrector: int = 1
        snr: float | None = None
        predictor: Literal["reverse_diffusion", "euler_maruyama"] = "reverse_diffusion"
        corrector_first: bool = False
        step_size: Literal["kernel", "per_sample"] = "kernel"

    def _check_options(self) -> None:
        if self.options.n_corrector < 0:
            raise SamplerError(f"sampler 'pc': n_corrector must be >= 0, got {self.options.n_corrector}")
        if self.options.snr is not None and not self.options.snr > 0:
            raise SamplerError(f"sampler 'pc': snr must be > 0 (or None for the per-process default), "
                               f"got {self.options.snr}")

    def nfe_for(self, steps: int) -> int:
        return steps * (1 + self.options.n_corrector) + int(self.options.final_denoise)

    def snr_for(self, process: Process) -> float:
        """The Langevin signal-to-noise ratio used on ``process`` (resolves ``snr=None``)."""
        if self.options.snr is not None:
            return self.options.snr
        return SNR_VE if has_unit_mean(process) else SNR_OTHER

    def predict(self, score: CountedScore, process: Process, z: Tensor, t: Tensor, t_next: Tensor,
                noise: NoiseSource) -> Tensor:
        """One predictor step t -> t_next (1 NFE)."""
        s = score(z, t)
        xi = noise.randn_like(z)
        if self.options.predictor == "reverse_diffusion":
            return reverse_diffusion_step(process, z, s, t, t_next, xi)
        h = t - t_next
        return z - h * process.reverse_drift(z, t, s) + process.diffusion(z, t) * torch.sqrt(h) * xi

    def correct(self, score: CountedScore, process: Process, z: Tensor, t: Tensor, noise: NoiseSource,
                snr: float) -> Tensor:
        """``n_corrector`` Langevin MCMC steps at fixed t (1 NFE each), step size set by snr (see the class doc)."""
        for _ in range(self.options.n_corrector):
            s = score(z, t)
            xi = noise.randn_like(z)
            if self.options.step_size == "per_sample":
                s_norm = s.reshape(s.shape[0], -1).norm(dim=1)
                xi_norm = xi.reshape(xi.shape[0], -1).norm(dim=1)
                eps = append_dims(2.0 * (snr * xi_norm / s_norm.clamp_min(torch.finfo(s.dtype).tiny)) ** 2, z.ndim)
            else:
                _, L = process.marginal_coeffs(t.reshape(1))
                harm = process.k / torch.cholesky_inverse(L).diagonal(dim1=-2, dim2=-1).sum(-1)  # 1/mean diag
                eps = append_dims((2.0 * snr**2 * harm).reshape(1).to(z.dtype), z.ndim)
            z = z + eps * s + torch.sqrt(2.0 * eps) * xi
        return z

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        snr = self.snr_for(process)
        for i in range(len(ts) - 1):
            if self.options.corrector_first:
                z = self.correct(score, process, z, ts[i], noise, snr)
            z = self.predict(score, process, z, ts[i], ts[i + 1], noise)
            if not self.options.corrector_first:
                z = self.correct(score, process, z, ts[i + 1], noise, snr)
        return z
