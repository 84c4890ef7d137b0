"""Training losses: denoising score matching in eps form (Ho et al. 2020 / Song et al. 2021) and the EDM loss (Karras et al. 2022)."""
from __future__ import annotations

import torch
from torch import Tensor

from fastdiff.model import ScoreModel
from fastdiff.processes.base import append_dims
from fastdiff.schema.sections import ModelConfig


def sample_train_times(model: ScoreModel, batch: int, device: torch.device,
                       generator: torch.Generator | None = None) -> Tensor:
    """t ~ U(t_eps_train, T), float64 [batch]."""
    p = model.process
    u = torch.rand(batch, dtype=torch.float64, device=device, generator=generator)
    return p.t_eps_train + (p.T - p.t_eps_train) * u


def eps_loss(model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """MSE(eps_hat(z_t, t), eps) over all state elements with z_t = process.perturb(x0, t, eps), t ~ U(t_eps_train, T)."""
    process = model.process
    t = sample_train_times(model, x0.shape[0], x0.device, generator)
    eps = torch.randn(process.state_shape(x0.shape), dtype=x0.dtype, device=x0.device, generator=generator)
    z = process.perturb(x0, t, eps)
    eps_hat = model.predict_eps(z, t)
    return (eps_hat.float() - eps.float()).square().mean()


def edm_loss(model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None,
             P_mean: float = ModelConfig.P_mean, P_std: float = ModelConfig.P_std) -> Tensor:
    """EDM loss: ln sigma ~ N(P_mean, P_std^2), weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, MSE(D, x0)."""
    sd = model.sigma_data
    log_sigma = P_mean + P_std * torch.randn(x0.shape[0], dtype=torch.float64, device=x0.device, generator=generator)
    sigma = log_sigma.exp()
    n = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
    x_tilde = x0 + append_dims(sigma, x0.ndim).to(x0.dtype) * n
    D = model.edm_denoise(x_tilde, sigma)
    weight = append_dims((sigma**2 + sd**2) / (sigma * sd) ** 2, x0.ndim).float()
    return (weight * (D.float() - x0.float()).square()).mean()


def diffusion_loss(model: ScoreModel, x0: Tensor, generator: torch.Generator | None = None,
                   P_mean: float = ModelConfig.P_mean, P_std: float = ModelConfig.P_std) -> Tensor:
    """Scalar training loss for the model's parameterization (eps: all processes; edm: VE/VP)."""
    if x0.ndim < 2:
        raise ValueError(f"x0 must be a batch [B, ...], got shape {tuple(x0.shape)}")
    if model.parameterization == "eps":
        return eps_loss(model, x0, generator)
    if model.parameterization == "edm":
        return edm_loss(model, x0, generator, P_mean=P_mean, P_std=P_std)
    raise ValueError(f"no loss for parameterization {model.parameterization!r}; allowed: eps, edm")
