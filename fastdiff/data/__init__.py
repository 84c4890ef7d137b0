"""Data sets (registered in DATASETS: toy2d, digits, image_folder, cifar10) and the Lightning data module."""
from __future__ import annotations

from typing import Any

from fastdiff.data.datamodule import DiffusionDataModule
from fastdiff.data.digits import Digits
from fastdiff.data.images import CIFAR10, ImageFolder, RestrictedUnpickler, load_cifar_batch
from fastdiff.data.toy2d import MixtureParams, Toy2D, rings_mixture, sample_toy2d
from fastdiff.registry import DATASETS, build


def get_dataset(name: str, **kwargs: Any) -> Any:
    """Build a registered data set by name (clear errors for unknown names and options)."""
    return build(DATASETS, name, **kwargs)


__all__ = [
    "CIFAR10",
    "Digits",
    "DiffusionDataModule",
    "ImageFolder",
    "MixtureParams",
    "RestrictedUnpickler",
    "Toy2D",
    "get_dataset",
    "load_cifar_batch",
    "rings_mixture",
    "sample_toy2d",
]
