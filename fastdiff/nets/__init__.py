"""Score networks: registered under NETS and built as ``cls(in_channels=..., out_channels=..., **options)``."""
from __future__ import annotations

from typing import Any

from torch import nn

from fastdiff.nets import embeddings
from fastdiff.nets.embeddings import FourierEmbedding, NoiseEmbedding, PositionalEmbedding
from fastdiff.nets.mlp import MLP
from fastdiff.nets.unet import UNet
from fastdiff.registry import NETS, build

__all__ = ["MLP", "UNet", "get_net", "list_nets", "count_parameters", "embeddings",
           "PositionalEmbedding", "FourierEmbedding", "NoiseEmbedding"]


def get_net(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered net by name; unknown names or options raise an error listing what is allowed."""
    return build(NETS, name, **kwargs)


def list_nets() -> list[str]:
    """Names of the registered nets."""
    return NETS.names()


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with requires_grad if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
