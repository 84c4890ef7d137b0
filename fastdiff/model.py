"""ScoreModel: network + forward process + parameterization -> score(z, t), the only thing samplers see."""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from fastdiff.processes import Process, get_process
from fastdiff.processes.base import append_dims, as_time

PARAMETERIZATIONS = ("eps", "edm")


def check_parameterization(process: Process, parameterization: str | None) -> str:
    """Resolve None to the process default and reject parameterizations the process does not support."""
    if parameterization is None:
        return process.default_parameterization
    allowed = tuple(process.parameterizations)
    if parameterization not in allowed:
        known = "" if parameterization in PARAMETERIZATIONS else " (unknown parameterization)"
        raise ValueError(f"parameterization {parameterization!r} is not supported by process "
                         f"{type(process).__name__}{known}; allowed: {', '.join(allowed)}")
    return parameterization


class ScoreModel(nn.Module):
    """Score s(z, t) = grad log p_t(z) from a network, in the eps (noise prediction) or EDM (Karras et al. 2022) form.

    eps: the net sees the state scaled per coordinate block by c_in = 1/sqrt(diag(a a^T sigma_data^2 + L L^T)) and
    c_noise = 1000 t, predicts eps, and score = -L^{-T} eps_hat (``process.score_from_eps``).
    edm (VE/VP): with x~ = z / s(t) and sigma = sigma(t), D = c_skip x~ + c_out F(c_in x~, log(sigma)/4) and
    score = (D - x~) / (s sigma^2). Process coefficients are computed in float64, the network in its own dtype.
    """

    def __init__(self, net: nn.Module, process: Process, parameterization: str | None = "eps",
                 sigma_data: float = 0.5) -> None:
        super().__init__()
        if not float(sigma_data) > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data!r}")
        self.net = net
        self.process = process
        self.parameterization = check_parameterization(process, parameterization)
        self.sigma_data = float(sigma_data)

    # ---- helpers --------------------------------------------------------------------------------------
    def _net_dtype(self) -> torch.dtype:
        p = next(self.net.parameters(), None)
        return p.dtype if p is not None and p.is_floating_point() else torch.float32

    def _run_net(self, x: Tensor, c_noise: Tensor, out_dtype: torch.dtype) -> Tensor:
        """F(x, c_noise) with the input in the network's dtype and the output cast back to ``out_dtype``."""
        out = self.net(x.to(self._net_dtype()), c_noise.to(torch.float32))
        if out.shape != x.shape:
            raise ValueError(f"network output shape {tuple(out.shape)} != input shape {tuple(x.shape)}; "
                             f"the net must map the state to the state (in_channels == out_channels)")
        return out.to(out_dtype)

    # ---- eps parameterization -------------------------------------------------------------------------
    def _scale_from_kernel(self, a: Tensor, L: Tensor) -> Tensor:
        """c_in [B, k] from the kernel (a, L) at t: 1/sqrt(diag(a a^T sigma_data^2 + L L^T))."""
        var = a**2 * self.sigma_data**2 + (L**2).sum(-1)  # diag(L L^T)_i = sum_j L_ij^2
        return var.rsqrt()

    def input_scale(self, t: Tensor) -> Tensor:
        """c_in per coordinate block, [B, k] float64: 1/sqrt(diag(a a^T sigma_data^2 + L L^T))."""
        return self._scale_from_kernel(*self.process.marginal_coeffs(t))

    def _eps_net(self, z: Tensor, t64: Tensor, a: Tensor, L: Tensor) -> Tensor:
        """The network's eps at (z, t64) given the kernel (a, L) at t64."""
        x_in = self.process.scale_blocks(self._scale_from_kernel(a, L), z)  # c_in is diagonal: a per-block scale
        return self._run_net(x_in, 1000.0 * t64, z.dtype)

    def predict_eps(self, z: Tensor, t: Tensor | float) -> Tensor:
        """Network estimate of the training noise eps at (z, t) (eps parameterization only)."""
        if self.parameterization != "eps":
            raise ValueError(f"predict_eps needs the eps parameterization, this model uses {self.parameterization!r}")
        t64 = as_time(t, z.shape[0], z.device)
        return self._eps_net(z, t64, *self.process.marginal_coeffs(t64))

    # ---- EDM parameterization -------------------------------------------------------------------------
    def edm_denoise(self, x_tilde: Tensor, sigma: Tensor | float) -> Tensor:
        """EDM denoiser D(x~; sigma) = c_skip x~ + c_out F(c_in x~, log(sigma)/4) (Karras et al. 2022, Table 1)."""
        if self.parameterization != "edm":
            raise ValueError(f"edm_denoise needs the edm parameterization, this model uses {self.parameterization!r}")
        sigma = as_time(sigma, x_tilde.shape[0], x_tilde.device)  # float64 [B]
        sd2 = self.sigma_data**2
        denom = sigma**2 + sd2
        c_skip = append_dims(sd2 / denom, x_tilde.ndim).to(x_tilde.dtype)
        c_out = append_dims(sigma * self.sigma_data / denom.sqrt(), x_tilde.ndim).to(x_tilde.dtype)
        c_in = append_dims(denom.rsqrt(), x_tilde.ndim).to(x_tilde.dtype)
        F = self._run_net(c_in * x_tilde, sigma.log() / 4, x_tilde.dtype)
        return c_skip * x_tilde + c_out * F

    # ---- the score --------------------------------------------------------------------------------------
    def forward(self, z: Tensor, t: Tensor | float) -> Tensor:
        """Score of the marginal p_t at state z; t is a float tensor [B] (or a scalar)."""
        if self.parameterization == "eps":
            # the kernel at t is formed once per call: the input scale and the eps -> score conversion share it
            t64 = as_time(t, z.shape[0], z.device)
            a, L = self.process.marginal_coeffs(t64)
            return self.process.score_from_eps(self._eps_net(z, t64, a, L), z, t64, chol=L)
        t64 = as_time(t, z.shape[0], z.device)
        s, sigma = self.process.scale(t64), self.process.sigma(t64)
        s_b = append_dims(s, z.ndim).to(z.dtype)
        x_tilde = z / s_b
        D = self.edm_denoise(x_tilde, sigma)
        return (D - x_tilde) / (s_b * append_dims(sigma**2, z.ndim).to(z.dtype))


def _net_kwargs(name: str, options: dict[str, Any], data_shape: tuple[int, ...]) -> dict[str, Any]:
    """Add ``image_size`` from the data shape for nets that take it (the UNet) unless the config sets it."""
    from fastdiff.registry import NETS

    params = inspect.signature(NETS.get(name)).parameters
    if "image_size" in params and "image_size" not in options and len(data_shape) == 3:
        options = {**options, "image_size": int(data_shape[-1])}
    return options


def build_score_model(config: Mapping[str, Any], data_shape: Sequence[int]) -> ScoreModel:
    """Build process + net + ScoreModel from the config sections ``process``, ``net`` and ``model``.

    ``data_shape`` is one sample's shape without the batch dim, e.g. (2,) or (C, H, W).
    """
    from fastdiff.nets import get_net

    data_shape = tuple(int(s) for s in data_shape)
    if len(data_shape) < 1 or any(s < 1 for s in data_shape):
        raise ValueError(f"data_shape must be one sample's shape like (2,) or (C, H, W), got {data_shape}")
    sections = {}
    for key in ("process", "net"):
        sec = dict(config.get(key) or {})
        if "name" not in sec:
            raise ValueError(f"config section {key!r} needs a 'name'")
        sections[key] = sec
    from fastdiff.schema import ModelConfig, parse_dataclass

    model_cfg = parse_dataclass("model", config.get("model") or {}, ModelConfig)
    proc_opts = sections["process"]
    process = get_process(proc_opts.pop("name"), **proc_opts)
    parameterization = check_parameterization(process, model_cfg.parameterization)
    net_opts = sections["net"]
    net_name = net_opts.pop("name")
    channels = process.state_channels(data_shape[0])
    net = get_net(net_name, in_channels=channels, out_channels=channels,
                  **_net_kwargs(net_name, net_opts, data_shape))
    return ScoreModel(net, process, parameterization=parameterization, sigma_data=model_cfg.sigma_data)
