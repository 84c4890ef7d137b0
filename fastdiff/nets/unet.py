"""DDPM++-style U-Net score network for images (Ho et al. 2020; Song et al. 2021, "Score-Based Generative Modeling through SDEs")."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdiff.nets.embeddings import NoiseEmbedding, as_batch_noise
from fastdiff.registry import NETS

_SKIP_SCALE = 1.0 / math.sqrt(2.0)


def num_groups(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """Largest GroupNorm group count that divides ``channels``, at most min(max_groups, channels // min_group_size)."""
    g = max(1, min(max_groups, channels // min_group_size))
    while channels % g:
        g -= 1
    return g


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """Residual block GN-SiLU-conv, + embedding (additive or scale-shift), GN-SiLU-dropout-conv(zero init); skip rescaled by 1/sqrt 2."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, scale_shift: bool) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch * (2 if scale_shift else 1))
        self.norm2 = group_norm(out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.drop(F.silu(h)))
        return (self.skip(x) + h) * _SKIP_SCALE


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H*W positions; output projection zero-initialised, skip rescaled by 1/sqrt 2."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, hh * ww)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [B, heads, HW, c/heads]
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, hh, ww)
        return (x + self.proj(out)) * _SKIP_SCALE


class Level(nn.Module):
    """One U-Net stage: a ResBlock followed by optional self-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, scale_shift: bool,
                 attn: bool, num_heads: int) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout, scale_shift)
        self.attn = AttnBlock(out_ch, num_heads) if attn else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.res(x, emb)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    """Halve H and W: strided 3x3 conv or 2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if with_conv else None

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"UNet {name} must be a positive integer, got {value!r}")
    return value


def _positive_ints(name: str, values: object, allow_empty: bool) -> tuple[int, ...]:
    vals = tuple(values) if isinstance(values, Sequence) and not isinstance(values, str) else None
    if vals is None or (not vals and not allow_empty) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals):
        raise ValueError(f"UNet {name} must be a {'' if allow_empty else 'non-empty '}list of positive "
                         f"integers, got {values!r}")
    return vals


@NETS.register("unet")
class UNet(nn.Module):
    """DDPM++-style U-Net; forward(x [B, C_in, H, W], c_noise [B]) -> [B, C_out, H, W].

    Levels run at image_size / 2^i for i < len(channel_mult) with channels * channel_mult[i] channels; each has
    num_res_blocks ResBlocks down and num_res_blocks + 1 up (concatenated skips), self-attention at the listed
    resolutions and in the middle block. The output conv is zero-initialised, so an untrained net outputs 0.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        image_size: int = 32,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_heads: int = 1,
        embedding_type: str = "positional",
        resample_with_conv: bool = True,
        fourier_scale: float = 16.0,
        scale_shift: bool = False,
        mid_attn: bool = True,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        in_channels, out_channels, image_size, channels, num_heads, num_res_blocks = (
            _positive_int(name, v) for name, v in (
                ("in_channels", in_channels), ("out_channels", out_channels), ("image_size", image_size),
                ("channels", channels), ("num_heads", num_heads), ("num_res_blocks", num_res_blocks)))
        mults = _positive_ints("channel_mult", channel_mult, allow_empty=False)
        attn_res = set(_positive_ints("attn_resolutions", attn_resolutions, allow_empty=True))
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet dropout must be in [0, 1), got {dropout}")
        self.factor = 2 ** (len(mults) - 1)
        if image_size % self.factor:
            raise ValueError(f"UNet image_size {image_size} must be divisible by 2**(len(channel_mult)-1) = "
                             f"{self.factor} (channel_mult={list(mults)}); use fewer levels or another size")
        resolutions = [image_size // 2**i for i in range(len(mults))]
        if not attn_res <= set(resolutions):
            raise ValueError(f"UNet attn_resolutions {sorted(attn_res)} must be among the level resolutions "
                             f"{resolutions} (image_size={image_size}, channel_mult={list(mults)})")
        for i, m in enumerate(mults):
            if (resolutions[i] in attn_res or (mid_attn and i == len(mults) - 1)) and (channels * m) % num_heads:
                raise ValueError(f"UNet num_heads={num_heads} must divide the channel count {channels * m} "
                                 f"at attention resolution {resolutions[i]}")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        emb_dim = 4 * channels
        self.embed = NoiseEmbedding(emb_dim, embedding_type, base_dim=max(4, 2 * (channels // 2)),
                                    fourier_scale=fourier_scale)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, cur = [channels], channels
        for i, m in enumerate(mults):
            for _ in range(num_res_blocks):
                self.down.append(Level(cur, channels * m, emb_dim, dropout, scale_shift,
                                       resolutions[i] in attn_res, num_heads))
                cur = channels * m
                skips.append(cur)
            if i < len(mults) - 1:
                self.down.append(Downsample(cur, resample_with_conv))
                skips.append(cur)
        self.mid = nn.ModuleList([
            Level(cur, cur, emb_dim, dropout, scale_shift, mid_attn, num_heads),
            Level(cur, cur, emb_dim, dropout, scale_shift, False, num_heads),
        ])
        self.up = nn.ModuleList()
        for i in reversed(range(len(mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(Level(cur + skips.pop(), channels * mults[i], emb_dim, dropout, scale_shift,
                                     resolutions[i] in attn_res, num_heads))
                cur = channels * mults[i]
            if i > 0:
                self.up.append(Upsample(cur, resample_with_conv))
        assert not skips
        self.norm_out = group_norm(cur)
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """x [B, in_channels, H, W], c_noise [B] (e.g. 1000 t or log(sigma)/4) -> [B, out_channels, H, W] in x's dtype."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects x of shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"UNet input H, W must be divisible by {self.factor}, got {tuple(x.shape[2:])}")
        emb = self.embed(as_batch_noise(c_noise, x.shape[0], x.device))
        h = self.conv_in(x.to(self.conv_in.weight.dtype))
        hs = [h]
        for mod in self.down:
            h = mod(h, emb)
            hs.append(h)
        for mod in self.mid:
            h = mod(h, emb)
        for mod in self.up:
            h = mod(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(mod, Level) else mod(h, emb)
        return self.conv_out(F.silu(self.norm_out(h))).to(x.dtype)
