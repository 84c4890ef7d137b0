"""Noise-level embeddings: sinusoidal positions (DDPM/EDM), random Fourier features (NCSN++), and the MLP after them."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EMBEDDING_TYPES = ("positional", "fourier")


def as_batch_noise(c_noise: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Conditioning as a float32 tensor of shape [batch]; a scalar or one-element tensor is broadcast."""
    c = torch.as_tensor(c_noise, device=device)
    if not (c.is_floating_point() or c.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"c_noise must be a real (float) tensor, got dtype {c.dtype}")
    c = c.to(torch.float32)
    if c.ndim == 0 or c.shape == (1,):
        return c.reshape(1).expand(batch)
    if c.shape != (batch,):
        raise ValueError(f"c_noise must have shape [B]=[{batch}] (or be a scalar), got {tuple(c.shape)}")
    return c


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar (Vaswani et al. 2017, as used by DDPM and EDM): [sin(c w_k), cos(c w_k)].

    Frequencies w_k = max_positions^(-k / (half - 1)), k = 0..half-1, span 1 down to 1/max_positions, so the
    embedding separates both c = 1000 t in [0, 1000] (low frequencies) and c = log(sigma)/4 in about [-2, 2]
    (the highest frequency is 1 rad per unit).
    """

    def __init__(self, dim: int, max_positions: float = 10000.0) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"positional embedding dim must be an even integer >= 4, got {dim}")
        if max_positions <= 1:
            raise ValueError(f"max_positions must be > 1, got {max_positions}")
        self.dim = dim
        self.max_positions = float(max_positions)
        half = dim // 2
        freqs = torch.exp(-math.log(self.max_positions) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: Tensor) -> Tensor:
        """c [B] -> [B, dim] (computed in float32)."""
        arg = c.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features (Tancik et al. 2020; NCSN++ in Song et al. 2021): [cos(2 pi c w), sin(2 pi c w)], w ~ N(0, scale^2).

    The frequencies are a persistent buffer, so a checkpoint restores the same embedding.
    """

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"fourier embedding dim must be an even integer >= 2, got {dim}")
        if not scale > 0:
            raise ValueError(f"fourier scale must be > 0, got {scale}")
        self.dim = dim
        self.scale = float(scale)
        self.register_buffer("freqs", torch.randn(dim // 2) * self.scale)

    def forward(self, c: Tensor) -> Tensor:
        """c [B] -> [B, dim] (computed in float32)."""
        arg = (2 * math.pi) * c.to(torch.float32)[:, None] * self.freqs.to(torch.float32)[None, :]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class NoiseEmbedding(nn.Module):
    """c_noise [B] -> [B, emb_dim]: a positional or Fourier embedding followed by Linear-SiLU-Linear (DDPM++)."""

    def __init__(
        self,
        emb_dim: int,
        embedding_type: str = "positional",
        base_dim: int | None = None,
        fourier_scale: float = 16.0,
        max_positions: float = 10000.0,
    ) -> None:
        super().__init__()
        if emb_dim < 1:
            raise ValueError(f"emb_dim must be >= 1, got {emb_dim}")
        base_dim = base_dim if base_dim is not None else max(4, 2 * (emb_dim // 4))
        if embedding_type == "positional":
            self.base: nn.Module = PositionalEmbedding(base_dim, max_positions=max_positions)
        elif embedding_type == "fourier":
            self.base = FourierEmbedding(base_dim, scale=fourier_scale)
        else:
            raise ValueError(f"unknown embedding_type {embedding_type!r}; allowed: {', '.join(EMBEDDING_TYPES)}")
        self.embedding_type = embedding_type
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, c: Tensor) -> Tensor:
        """c [B] -> [B, emb_dim]."""
        return self.mlp(self.base(c))
