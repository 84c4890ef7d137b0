"""ScoreModel parameterizations against closed forms, config building, and the losses' expected values."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from fastdiff.losses import diffusion_loss, edm_loss, eps_loss
from fastdiff.model import ScoreModel, build_score_model
from fastdiff.processes import PSLD, VE, VP

PROCESSES = {"vp": VP, "ve": lambda: VE(sigma_min=0.01, sigma_max=5.0), "psld": PSLD}


class Probe(nn.Module):
    """Returns a fixed transform of its input and records what it saw (float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        self.seen = (x.clone(), c_noise.clone())
        return torch.tanh(x) + self.anchor


def psld_cov(p: PSLD, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HSM kernel (Sxx, Sxm, Smm) from the table formulas in DESIGN.md, written out independently."""
    g, nu, mi, M = p.gamma, p.nu, p.m_inv, p.mass
    b = p.beta * t
    S = torch.exp(-(g + nu) * b / 2)
    sxx0, smm0 = 0.0, p.kappa * M
    sxx = (1 - S) + S * (sxx0 * (1 + (nu - g) * b / 2 + mi * b**2 / 4) + smm0 * mi**2 * b**2 / 4
                         - mi * b**2 / 2 + (g - nu) * b / 2) + 1e-9
    sxm = S * (sxx0 * ((g - nu) * b**2 / 8 - b / 2) + smm0 * (mi * (g - nu) * b**2 / 8 + mi * b / 2)
               + (nu - g) * b**2 / 4)
    smm = M * (1 - S) + S * (sxx0 * b**2 / 4 + smm0 * (1 + (g - nu) * b / 2 + mi * b**2 / 4) - b**2 / 2
                             + M * (nu - g) * b / 2) + 1e-9
    return sxx, sxm, smm


def psld_mean_coeffs(p: PSLD, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = p.beta * t
    e = torch.exp(-(p.gamma + p.nu) * b / 4)
    return e * (1 + (p.nu - p.gamma) * b / 4), e * (-b / 2)


T = torch.tensor([1e-5, 1e-3, 0.05, 0.3, 0.7, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("name", ["vp", "ve", "psld"])
def test_eps_inputs_and_score_match_closed_form(name: str) -> None:
    """c_in, c_noise = 1000 t and score = -L^{-T} eps_hat, written out per process."""
    process = PROCESSES[name]()
    sd = 0.7
    model = ScoreModel(Probe(), process, "eps", sigma_data=sd)
    d = 3
    z = torch.randn(len(T), process.k * d, dtype=torch.float64)
    score = model(z, T)
    x_in, c_noise = model.net.seen
    torch.testing.assert_close(c_noise, (1000 * T).float())
    eps_hat = torch.tanh(x_in)
    torch.testing.assert_close(score, process.score_from_eps(eps_hat, z, T))
    if name == "psld":
        sxx, sxm, smm = psld_cov(process, T)
        ax, am = psld_mean_coeffs(process, T)
        c_x = (ax**2 * sd**2 + sxx).rsqrt()[:, None]
        c_m = (am**2 * sd**2 + smm).rsqrt()[:, None]
        torch.testing.assert_close(x_in, torch.cat([c_x * z[:, :d], c_m * z[:, d:]], 1))
        l11 = sxx.sqrt()[:, None]
        l21 = sxm[:, None] / l11
        l22 = (smm[:, None] - l21**2).sqrt()
        ex, em = eps_hat[:, :d], eps_hat[:, d:]
        expect = torch.cat([-ex / l11 + l21 / (l11 * l22) * em, -em / l22], 1)
    else:
        if name == "vp":
            B = 0.1 * T + 0.5 * (20 - 0.1) * T**2
            a, std = torch.exp(-B / 2), torch.sqrt(1 - torch.exp(-B))
        else:
            a, std = torch.ones_like(T), 0.01 * (5.0 / 0.01) ** T
        torch.testing.assert_close(x_in, z / (a**2 * sd**2 + std**2).sqrt()[:, None])
        expect = -eps_hat / std[:, None]
    torch.testing.assert_close(score, expect, rtol=1e-6, atol=1e-8)


class GaussianEpsNet(nn.Module):
    """Bayes-optimal eps prediction for data N(0, sd^2 I), rebuilt from the net's input x_in.

    t comes from ``self.t`` when set (c_noise = 1000 t is float32, too coarse for PSLD's stiff start), else c_noise.
    """

    def __init__(self, process, sd: float, sigma_data: float) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.process, self.sd, self.sigma_data = process, sd, sigma_data
        self.t: torch.Tensor | None = None

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        t = self.t if self.t is not None else c_noise.double() / 1000
        a, L = self.process.marginal_coeffs(t)
        c_in = (a**2 * self.sigma_data**2 + (L @ L.transpose(-1, -2)).diagonal(dim1=-2, dim2=-1)).rsqrt()
        z = self.process.apply(torch.diag_embed(1 / c_in), x_in)
        cov = a[:, :, None] * a[:, None, :] * self.sd**2 + L @ L.transpose(-1, -2)
        # eps* = E[eps | z] = L^T Sigma^{-1} z
        return self.process.apply(L.transpose(-1, -2) @ torch.linalg.inv(cov), z) + self.anchor


@pytest.mark.parametrize("name", ["vp", "ve", "psld"])
def test_eps_perfect_net_gives_exact_gaussian_score(name: str) -> None:
    process = PROCESSES[name]()
    sd, d = 0.8, 4
    model = ScoreModel(GaussianEpsNet(process, sd, 0.5), process, "eps", sigma_data=0.5)
    z = torch.randn(len(T), process.k * d, dtype=torch.float64)
    model.net.t = T
    score = model(z, T)
    a, L = process.marginal_coeffs(T)
    cov = a[:, :, None] * a[:, None, :] * sd**2 + L @ L.transpose(-1, -2)
    expect = -process.apply(torch.linalg.inv(cov), z)
    torch.testing.assert_close(score, expect, rtol=1e-7, atol=1e-9)


class GaussianEDMNet(nn.Module):
    """F such that D = c_skip x~ + c_out F is the perfect denoiser x~ sd^2 / (sd^2 + sigma^2) for N(0, sd^2)."""

    def __init__(self, sd: float, sigma_data: float) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.sd, self.sigma_data = sd, sigma_data

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(4 * c_noise.double())[:, None]
        sdat2 = self.sigma_data**2
        x_tilde = x_in * (sigma**2 + sdat2).sqrt()
        D = x_tilde * self.sd**2 / (self.sd**2 + sigma**2)
        c_skip = sdat2 / (sigma**2 + sdat2)
        c_out = sigma * self.sigma_data / (sigma**2 + sdat2).sqrt()
        return (D - c_skip * x_tilde) / c_out + self.anchor


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_edm_perfect_denoiser_gives_exact_gaussian_score(name: str) -> None:
    process = PROCESSES[name]()
    sd = 0.8
    model = ScoreModel(GaussianEDMNet(sd, 0.5), process, "edm", sigma_data=0.5)
    t = T[1:]  # sigma(t) > 0 with a float32 c_noise round trip
    z = torch.randn(len(t), 5, dtype=torch.float64)
    score = model(z, t)
    s, sigma = process.scale(t)[:, None], process.sigma(t)[:, None]
    expect = -z / (s**2 * (sd**2 + sigma**2))
    # c_noise = log(sigma)/4 passes through float32: relative error ~1e-6 in sigma
    torch.testing.assert_close(score, expect, rtol=2e-5, atol=1e-8)


def test_edm_rejected_on_psld_and_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"not supported by process PSLD.*allowed: eps"):
        ScoreModel(Probe(), PSLD(), "edm")
    with pytest.raises(ValueError, match=r"'v'.*allowed: eps, edm"):
        ScoreModel(Probe(), VP(), "v")
    assert ScoreModel(Probe(), VP(), None).parameterization == "eps"
    with pytest.raises(ValueError, match="edm_denoise needs the edm"):
        ScoreModel(Probe(), VP(), "eps").edm_denoise(torch.zeros(2, 3), 1.0)


def _cfg(process: str, parameterization: str | None = None, **net) -> dict:
    return {"process": {"name": process}, "net": {"name": "mlp", "hidden": 32, "depth": 1, "emb_dim": 16, **net},
            "model": {"parameterization": parameterization, "sigma_data": 0.5}}


def test_build_score_model_from_config() -> None:
    m = build_score_model(_cfg("psld"), (2,))
    assert m.parameterization == "eps" and m.net.in_channels == 4 and m.net.out_channels == 4
    m = build_score_model(_cfg("vp", "edm"), (2,))
    assert m.parameterization == "edm" and m.net.in_channels == 2
    cfg = {"process": {"name": "vp"}, "net": {"name": "unet", "channels": 8, "channel_mult": [1, 2],
                                                 "num_res_blocks": 1, "attn_resolutions": [4]}, "model": {}}
    unet = build_score_model(cfg, (1, 8, 8))
    assert unet(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="model.sigmadata: unknown key"):
        build_score_model({**_cfg("vp"), "model": {"sigmadata": 1.0}}, (2,))
    with pytest.raises(ValueError, match="not supported by process PSLD"):
        build_score_model(_cfg("psld", "edm"), (2,))


def test_bf16_autocast_forward_on_cpu() -> None:
    torch.manual_seed(0)
    model = build_score_model(_cfg("psld"), (2,))
    nn.init.normal_(model.net.out.weight, std=0.1)  # the MLP starts with a zero output layer
    z, t = torch.randn(16, 4), torch.rand(16) * 0.9 + 0.1
    ref = model(z, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(z, t)
        loss = diffusion_loss(model, torch.randn(16, 2))
    assert out.dtype == torch.float32 and loss.dtype == torch.float32 and torch.isfinite(loss)
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < 3e-2, rel


def _gauss_mean_over_t(process, f, n: int = 20001) -> float:
    """Average of f(t) over t ~ U(t_eps_train, T) by the trapezoid rule in float64."""
    t = torch.linspace(process.t_eps_train, process.T, n, dtype=torch.float64)
    return (torch.trapezoid(f(t), t) / (process.T - process.t_eps_train)).item()


@pytest.mark.parametrize("name", ["vp", "ve", "psld"])
def test_eps_loss_of_perfect_net_equals_irreducible_loss(name: str) -> None:
    """For N(0, sd^2) data the Bayes eps-loss per element at t is tr(I - L^T Sigma^-1 L)/k."""
    process = PROCESSES[name]()
    sd, d, n = 0.8, 4, 8192
    model = ScoreModel(GaussianEpsNet(process, sd, 0.5), process, "eps", sigma_data=0.5)
    g = torch.Generator().manual_seed(0)
    losses = torch.stack([eps_loss(model, sd * torch.randn(n, d, dtype=torch.float64, generator=g), g)
                          for _ in range(4)])

    def per_t(t: torch.Tensor) -> torch.Tensor:
        a, L = process.marginal_coeffs(t)
        cov = a[:, :, None] * a[:, None, :] * sd**2 + L @ L.transpose(-1, -2)
        resid = torch.eye(process.k, dtype=torch.float64) - L.transpose(-1, -2) @ torch.linalg.inv(cov) @ L
        return resid.diagonal(dim1=-2, dim2=-1).sum(-1) / process.k

    expect = _gauss_mean_over_t(process, per_t)
    assert abs(losses.mean().item() - expect) < 4 * losses.std().item() / 2 + 1e-3, (losses, expect)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_edm_loss_of_perfect_denoiser_is_one(name: str) -> None:
    """With data N(0, sigma_data^2), weight * E[(D* - x0)^2] = 1 for every sigma (the point of the EDM weight)."""
    process = PROCESSES[name]()
    model = ScoreModel(GaussianEDMNet(0.5, 0.5), process, "edm", sigma_data=0.5)
    g = torch.Generator().manual_seed(1)
    losses = torch.stack([edm_loss(model, 0.5 * torch.randn(8192, 3, dtype=torch.float64, generator=g), g)
                          for _ in range(4)])
    assert abs(losses.mean().item() - 1.0) < 0.02, losses
    assert diffusion_loss(model, 0.5 * torch.randn(64, 3, dtype=torch.float64)).ndim == 0
