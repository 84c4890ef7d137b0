"""scikit-learn's bundled 8x8 handwritten digits (1797 images, values 0..16) as [1, 8, 8] images in [-1, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fastdiff.registry import DATASETS

SPLITS: tuple[str, ...] = ("train", "val", "all")
VAL_FRACTION = 0.1


def digits_split_sizes(total: int) -> tuple[int, int]:
    """(train, val) sizes: the last round(10%) of scikit-learn's order is the validation split."""
    n_val = int(round(VAL_FRACTION * total))
    return total - n_val, n_val


@DATASETS.register("digits")
class Digits(Dataset):
    """sklearn ``load_digits`` scaled x/8 - 1; split train (first 90%), val (last 10%) or all; optional -1 padding."""

    kind = "image"
    val_split = "val"

    def __init__(self, split: str = "train", pad_to: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown digits split {split!r}; allowed: {', '.join(SPLITS)}")
        if pad_to is not None and (isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 8):
            raise ValueError(f"digits pad_to must be None or an int >= 8, got {pad_to!r}")
        from sklearn.datasets import load_digits

        raw = torch.as_tensor(load_digits().data, dtype=torch.float32)  # [1797, 64], 0..16
        images = (raw / 8.0 - 1.0).reshape(-1, 1, 8, 8)
        n_train, _ = digits_split_sizes(images.shape[0])
        if split == "train":
            images = images[:n_train]
        elif split == "val":
            images = images[n_train:]
        if pad_to is not None and pad_to > 8:
            lo = (pad_to - 8) // 2
            hi = pad_to - 8 - lo
            images = F.pad(images, (lo, hi, lo, hi), value=-1.0)
        self.split = split
        self.pad_to = pad_to
        self.data = images.contiguous()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]

    def __repr__(self) -> str:
        return f"Digits(split={self.split!r}, n={len(self)}, data_shape={self.data_shape})"
