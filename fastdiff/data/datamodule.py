"""Lightning data module: builds a registered data set by name, splits off validation, serves loaders.

Validation data: a data set with a native validation split (class attribute ``val_split``: digits ->
"val", cifar10 -> "test") is built twice, with ``split="train"`` for training and ``split=val_split``
for validation; ``split`` is therefore chosen here and must not be passed. Any other data set is
split by a fixed permutation (seed 0): ``val_fraction`` of it is held out for validation and the
rest trains; with ``val_fraction=0`` validation reuses the first training items. The validation set
is capped at ``val_size`` items so that validation stays cheap.

Training order: a pure function of (``shuffle_seed``, epoch), sharded over the trainer's ranks by the sampler
itself (DistributedSampler layout; Lightning leaves a DistributedSampler in place), and resumable mid-epoch through
the loader's state in the checkpoint (see :mod:`fastdiff.data.resumable`). ``shuffle_seed=None`` uses the run seed
(``PL_GLOBAL_SEED``, set by ``seed_everything``; 0 without it). Random flips are decided per (seed, epoch, item).
Validation loaders are plain DataLoaders in order (Lightning shards them under DDP).
"""
from __future__ import annotations

import math
import os
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from fastdiff.data.resumable import EpochShuffleSampler, ResumableDataLoader, uniform_from_seed
from fastdiff.registry import DATASETS, build
from fastdiff.schema import ConfigError, DataLoaderConfig, check_dataclass, validate_options
from fastdiff.schema.components import RESERVED

SPLIT_SEED = 0


class RandomHFlip(Dataset):
    """Wraps an image data set; flips each item along its width with probability p.

    Keys are indices (flip drawn from the global RNG) or ``(index, item_seed)`` pairs from a salted
    :class:`EpochShuffleSampler` (flip a pure function of item_seed, so a resumed run flips the same items).
    """

    def __init__(self, base: Dataset, p: float = 0.5) -> None:
        self.base = base
        self.p = p

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        if isinstance(key, tuple):
            index, item_seed = key
            flip = uniform_from_seed(item_seed) < self.p
        else:
            index, flip = key, bool(torch.rand(()) < self.p)
        x = self.base[index]
        return x.flip(-1) if flip else x


class DiffusionDataModule(LightningDataModule):
    """Data module for one registered data set (``name``) with its constructor options as keywords."""

    def __init__(
        self,
        name: str,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        val_size: int = 1024,
        hflip: bool = False,
        shuffle_seed: int | None = None,
        **dataset_options: Any,
    ) -> None:
        super().__init__()
        self.dataset_cls = DATASETS.get(name)
        # the schema layer checks names, types and ranges (the same checks as the config's data section)
        check_dataclass("data", {"batch_size": batch_size, "num_workers": num_workers, "val_fraction": val_fraction,
                                 "val_size": val_size, "hflip": hflip, "shuffle_seed": shuffle_seed}, DataLoaderConfig)
        validate_options("data", dataset_options, self.dataset_cls, DATASETS.kind, name, RESERVED["data"],
                         fill_defaults=False)
        if hflip and self.dataset_cls.kind != "image":
            raise ConfigError(f"data.hflip: true for {self.dataset_cls.kind} data set {name!r} — hflip applies to "
                              "image data only")
        self.save_hyperparameters()
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.val_size = val_size
        self.hflip = bool(hflip)
        self.shuffle_seed = shuffle_seed
        self.dataset_options = dict(dataset_options)
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self._train_loader: tuple[Any, ResumableDataLoader] | None = None  # (trainer, its last train loader)

    # ------------------------------------------------------------------ data sets
    @property
    def kind(self) -> str:
        """Either "vector" or "image", from the data set class."""
        return self.dataset_cls.kind

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one item ([d] or [C, H, W]); builds the data sets if needed."""
        self._build()
        return tuple(self._base_train.data_shape)

    def _build(self) -> None:
        if self.train_dataset is not None:
            return
        val_split = getattr(self.dataset_cls, "val_split", None)
        if val_split is not None:
            train = build(DATASETS, self.name, split="train", **self.dataset_options)
            val: Dataset = build(DATASETS, self.name, split=val_split, **self.dataset_options)
        else:
            pool = build(DATASETS, self.name, **self.dataset_options)
            n = len(pool)
            n_val = int(round(self.val_fraction * n))
            if n_val == 0 or n_val >= n:
                train, val = pool, pool
            else:
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
                train, val = Subset(pool, sorted(perm[n_val:])), Subset(pool, sorted(perm[:n_val]))
        if len(val) > self.val_size:  # type: ignore[arg-type]
            val = Subset(val, list(range(self.val_size)))
        self._base_train = train if not isinstance(train, Subset) else train.dataset
        self.train_dataset = RandomHFlip(train) if self.hflip else train
        self.val_dataset = val

    def setup(self, stage: str | None = None) -> None:
        """Build the data sets and check one rank's share holds at least one full batch."""
        self._build()
        world = getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1
        per_rank = math.ceil(len(self.train_dataset) / max(int(world), 1))  # type: ignore[arg-type]
        if per_rank < self.batch_size:
            raise ValueError(
                f"dataset {self.name!r}: {len(self.train_dataset)} training items over {world} rank(s) "  # type: ignore[arg-type]
                f"give {per_rank} per rank, fewer than batch_size {self.batch_size}; lower batch_size"
            )

    # ------------------------------------------------------------------ loaders
    def train_sampler(self) -> EpochShuffleSampler:
        """The training order: seeded by ``shuffle_seed`` (or the run seed), sharded like the trainer's ranks."""
        self._build()
        seed = self.shuffle_seed if self.shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        kwargs = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        return EpochShuffleSampler(self.train_dataset, seed=seed,  # type: ignore[arg-type]
                                   num_replicas=int(kwargs.get("num_replicas", 1)), rank=int(kwargs.get("rank", 0)),
                                   salted=self.hflip)

    def train_dataloader(self) -> DataLoader:
        """Shuffled full batches (drop_last) in the resumable order of :meth:`train_sampler`; a reloaded loader
        continues from the position of the previous one."""
        loader = ResumableDataLoader(
            self.train_dataset,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=self.train_sampler(),
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
        previous, self._train_loader = self._train_loader, (self.trainer, loader)
        if previous is not None and previous[0] is not None and previous[0] is self.trainer:  # same fit, reloaded
            loader.load_state_dict(previous[1].state_dict())
        return loader

    def val_dataloader(self) -> DataLoader:
        """The validation items in order."""
        self._build()
        return DataLoader(
            self.val_dataset,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
