"""Residual MLP score network for vector data (toy 2-D sets, and their PSLD state of twice the width)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fastdiff.nets.embeddings import NoiseEmbedding, as_batch_noise
from fastdiff.registry import NETS


class MLPBlock(nn.Module):
    """Pre-norm residual block: h + W2 dropout(SiLU(W1 SiLU(LayerNorm(h)) + P SiLU(emb)))."""

    def __init__(self, hidden: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        u = self.fc1(self.act(self.norm(h))) + self.emb(self.act(emb))
        return h + self.fc2(self.drop(self.act(u)))


@NETS.register("mlp")
class MLP(nn.Module):
    """Residual MLP with a noise embedding added in every block; forward(x [B, C_in], c_noise [B]) -> [B, C_out]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        hidden: int = 256,
        depth: int = 4,
        emb_dim: int = 128,
        dropout: float = 0.0,
        embedding_type: str = "positional",
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("hidden", hidden),
                        ("emb_dim", emb_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MLP {name} must be a positive integer, got {v!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"MLP depth must be a non-negative integer, got {depth!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.embed = NoiseEmbedding(emb_dim, embedding_type, fourier_scale=fourier_scale)
        self.inp = nn.Linear(self.in_channels, hidden)
        self.blocks = nn.ModuleList(MLPBlock(hidden, emb_dim, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, self.out_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """x [B, in_channels], c_noise [B] (e.g. 1000 t or log(sigma)/4) -> [B, out_channels] in x's dtype."""
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"MLP expects x of shape [B, {self.in_channels}], got {tuple(x.shape)}")
        emb = self.embed(as_batch_noise(c_noise, x.shape[0], x.device))
        h = self.inp(x.to(self.inp.weight.dtype))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(torch.nn.functional.silu(self.out_norm(h))).to(x.dtype)
