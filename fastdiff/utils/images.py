"""Images in model space ([-1, 1] floats) -> uint8 pixels, and tiled grids of them."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8 [0, 255] by rounding (values outside [-1, 1] are clipped)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: Tensor) -> Tensor:
    """uint8 pixels 0..255 -> float32 in [-1, 1] (x / 127.5 - 1), the inverse of :func:`to_uint8` on its range."""
    return x.float() / 127.5 - 1.0


def image_grid(x: Tensor, upscale: int = 1, pad: int = 1) -> Tensor:
    """Images [N, C, H, W] in [-1, 1] -> one uint8 RGB grid [H', W', 3] (white padding, nearest upscaling)."""
    n, c, h, w = x.shape
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    img = to_uint8(x.cpu())
    img = img.expand(-1, 3, -1, -1) if c == 1 else img[:, :3]
    img = img.repeat_interleave(upscale, 2).repeat_interleave(upscale, 3)
    h, w = h * upscale, w * upscale
    grid = torch.full((3, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img[i]
    return grid.permute(1, 2, 0)
