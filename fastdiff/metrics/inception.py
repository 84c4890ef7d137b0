"""The standard FID network: Inception-v3 as in the TF graph of Heusel et al. (2017), pool3 output (2048-d).

Facts this module is written from (the published FID graph ``inception-2015-12-05`` and its PyTorch ports):
- Every convolution is conv (no bias) -> batch norm without scale (eps 1e-3) -> ReLU ("BasicConv").
- Stem: 3x3/2 (32), 3x3 (32), 3x3 pad 1 (64), max pool 3/2, 1x1 (80), 3x3 (192), max pool 3/2.
- Mixed_5b/5c/5d (A blocks), Mixed_6a (B), Mixed_6b..6e (C, 7x7 factorised), Mixed_7a (D), Mixed_7b/7c (E).
- The FID variants differ from the ImageNet classifier: the average pools of the A, C and first E blocks do not
  count padding (TF's ``SAME`` average pool), and the last E block (Mixed_7c) pools with a 3x3 *max* pool.
- pool3 = global average over the final 8x8 map at 299x299 input.
- Input: uint8 RGB resized to 299x299 with TF1's bilinear resize (align_corners=False, *no* half-pixel centres:
  source coordinate = destination index * in_size / out_size, clamped at the last pixel; no antialiasing), then
  scaled to (x - 128) / 128.

Parameter names follow the torchvision layout that ``pt_inception-2015-12-05-6726825d.pth`` uses
(``Mixed_5b.branch1x1.conv.weight``, ``...bn.running_mean``), so that file loads without renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FID_SIZE = 299
NUM_FEATURES = 2048


class BasicConv(nn.Module):
    """conv (no bias) -> BN (eps 1e-3; its weight stays 1: the TF graph has no BN scale) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def avg_pool_same(x: Tensor) -> Tensor:
    """3x3/1 average pool with TF ``SAME`` semantics: border windows average only the pixels inside the image."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv(cin, 64, 1)
        self.branch5x5_1 = BasicConv(cin, 48, 1)
        self.branch5x5_2 = BasicConv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1)
        self.branch_pool = BasicConv(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(avg_pool_same(x))], 1)


class BlockB(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1->3x3->3x3/2 | maxpool 3/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17x17 block with 7x7 convolutions factorised into 1x7 and 7x1 (c7 channels inside)."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv(cin, 192, 1)
        self.branch7x7_1 = BasicConv(cin, c7, 1)
        self.branch7x7_2 = BasicConv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(avg_pool_same(x))], 1)


class BlockD(nn.Module):
    """17 -> 8 reduction: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool 3/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv(cin, 192, 1)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs; ``max_pool`` selects the last block's pool (FID graph)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv(cin, 320, 1)
        self.branch3x3_1 = BasicConv(cin, 384, 1)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg_pool_same(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a), self.branch3x3dbl_3a(b),
                          self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """``forward(x)``: float images [N, 3, 299, 299] already scaled to (x - 128) / 128 -> pool3 features [N, 2048]."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean((2, 3))


# ---- input pipeline --------------------------------------------------------------------------------------------
def tf1_bilinear_matrix(in_size: int, out_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """[out, in] interpolation weights of TF1's resize_bilinear (align_corners=False, no half-pixel centres).

    Output index i reads source coordinate s = i * in / out; with j = floor(s) and f = s - j it takes
    (1 - f) * x[j] + f * x[min(j + 1, in - 1)]. Rows sum to 1, so the resize commutes with affine scaling.
    """
    s = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    lo = s.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = s - lo.double()
    w = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    w.index_put_((rows, lo), 1 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w.to(dtype)


def resize_tf1(x: Tensor, size: int = FID_SIZE) -> Tensor:
    """Bilinear resize of float images [N, C, H, W] to size x size with TF1 semantics (separable: Wy X Wx^T)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    wy = tf1_bilinear_matrix(h, size, x.dtype).to(x.device)
    wx = tf1_bilinear_matrix(w, size, x.dtype).to(x.device)
    return torch.matmul(torch.matmul(wy, x), wx.T)


def fid_input(u8: Tensor) -> Tensor:
    """uint8 images [N, 1 or 3, H, W] -> the network's input [N, 3, 299, 299] float32: gray replicated to RGB,
    TF1 bilinear resize of the 0..255 values (float64 for the weights, no re-quantisation), then (x - 128) / 128."""
    if u8.dtype != torch.uint8 or u8.ndim != 4 or u8.shape[1] not in (1, 3):
        raise ValueError(f"FID input must be uint8 images [N, 1 or 3, H, W], got {u8.dtype} {tuple(u8.shape)}")
    x = resize_tf1(u8.double())
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return ((x - 128.0) / 128.0).float().contiguous()
