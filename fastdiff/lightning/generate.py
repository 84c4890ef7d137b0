"""The predict side of sample.py: per-rank seed batches (EDM's split), a LightningModule whose predict_step samples
a batch with the (EMA) score model, and the optional Fréchet distance against reference statistics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fastdiff.lightning.callbacks.writer import SampleStore, is_image_shape
from fastdiff.model import ScoreModel
from fastdiff.samplers import Sampler, SamplingNaNError
from fastdiff.seeds import rank_batches


class SeedBatches(Dataset):
    """Item i of one rank: ``{"seeds": seeds to sample, "skipped": seeds already on disk}`` (either may be empty)."""

    def __init__(self, batches: Sequence[Sequence[int]], finished: set[int]) -> None:
        self.items = [{"seeds": [int(s) for s in b if s not in finished],
                       "skipped": [int(s) for s in b if s in finished]} for b in batches]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def _collate(item: dict[str, list[int]]) -> dict[str, list[int]]:
    return item  # one dataset item is one whole batch (DataLoader with batch_size=None)


class GenerateModule(LightningModule):
    """Samples seed batches with ``sampler``; each rank gets ``rank_batches(seeds, batch_size, world, rank)``, so
    every rank runs the same number of predict steps (empty batches included) and no sampler re-splits seeds."""

    def __init__(self, model: ScoreModel, sampler: Sampler, seeds: Sequence[int], batch_size: int,
                 store: SampleStore) -> None:
        super().__init__()
        self.model = model
        self.sampler = sampler
        self.seeds = list(seeds)
        self.batch_size = int(batch_size)
        self.store = store

    def predict_dataloader(self) -> DataLoader:
        batches = rank_batches(self.seeds, self.batch_size, self.trainer.world_size, self.trainer.global_rank)
        finished = self.store.finished([s for b in batches for s in b])
        return DataLoader(SeedBatches(batches, finished), batch_size=None, shuffle=False, num_workers=0,
                          collate_fn=_collate)

    def rank_seed_count(self) -> int:
        """Seeds in this rank's batches (finished ones included): the progress bar's total."""
        return sum(len(b) for b in rank_batches(self.seeds, self.batch_size, self.trainer.world_size,
                                                self.trainer.global_rank))

    def _draw(self, seeds: list[int]) -> tuple[Tensor, Tensor]:
        shape = (len(seeds), *self.store.data_shape)
        out = self.sampler.sample(self.model, self.model.process, shape, seeds=seeds, device=self.device)
        return out.x, out.nfe_per_sample

    def predict_step(self, batch: dict[str, list[int]], batch_idx: int) -> dict[str, Any]:
        """Sample the batch's unfinished seeds; seeds whose samples turn NaN/inf are dropped and reported (the
        others are redrawn without them, which gives the same values: samples never depend on their batch)."""
        seeds, failed = list(batch["seeds"]), []
        x, nfe = torch.empty(0), torch.zeros(0, dtype=torch.int64)
        while seeds:
            try:
                x, nfe = self._draw(seeds)
                break
            except SamplingNaNError as err:
                bad = set(err.seeds)
                failed.extend(s for s in seeds if s in bad)
                seeds = [s for s in seeds if s not in bad]
        return {"seeds": seeds, "x": x, "nfe": nfe, "skipped": list(batch["skipped"]), "failed": failed}


# ---- Fréchet distance against reference statistics ------------------------------------------------------------
def metric_for_extractor(extractor_id: str) -> tuple[str, str]:
    """Reference-statistics extractor id -> (feature extractor name, metric name): inception -> fid,
    classifier-<dataset>-... -> fd_<dataset>, raw-... -> raw_fd."""
    if extractor_id.startswith("inception"):
        return "inception", "fid"
    if extractor_id.startswith("classifier-"):
        return "classifier", f"fd_{extractor_id.split('-')[1]}"
    if extractor_id.startswith("raw-"):
        return "raw", "raw_fd"
    raise ValueError(f"reference statistics use an unknown feature extractor {extractor_id!r}; "
                     "expected inception, classifier-<dataset>-... or raw-...")


@dataclass
class FIDRequest:
    """Fréchet distance of the generated set to reference statistics (features as the files store the samples).

    The generated side is a float64 running sum and sum of outer products on every rank (torchmetrics state),
    summed over ranks in ``compute`` (all ranks call it)."""

    ref: str
    extractor_id: str
    data_shape: tuple[int, ...]
    data: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metrics: Any = None  # a fastdiff.evaluation.MetricSet of the one metric, after prepare()

    @property
    def names(self) -> tuple[str, str]:
        return metric_for_extractor(self.extractor_id)

    @property
    def extractor(self) -> Any:
        """The feature extractor built by :meth:`prepare`."""
        return self.metrics.extractor(self.names[1])

    def check(self) -> None:
        """Cheap checks before any sampling: the reference's features fit the checkpoint's data (kind, set, shape)."""
        ext, _ = self.names
        shape = "x".join(str(s) for s in self.data_shape)
        dataset = (self.data or {}).get("name")
        if ext in ("inception", "classifier") and not is_image_shape(self.data_shape):
            raise ValueError(f"{self.ref} holds {ext} (image) features, but the model generates data of shape "
                             f"{self.data_shape}; use reference statistics with raw features")
        if ext == "classifier" and self.extractor_id.split("-")[1] != dataset:
            raise ValueError(f"{self.ref} holds classifier features of data set {self.extractor_id.split('-')[1]!r}, "
                             f"but the checkpoint was trained on {dataset!r}")
        if ext == "raw" and self.extractor_id != f"raw-{shape}":
            raise ValueError(f"{self.ref} holds raw features of {self.extractor_id[4:]} data, but the model "
                             f"generates {shape}")

    def prepare(self, device: torch.device, broadcast: Callable[[Any], Any] | None = None,
                write_cache: bool = True) -> None:
        """Build the feature extractor on every rank and check it against the reference statistics."""
        from fastdiff.evaluation.metric_set import MetricSet

        ext, name = self.names
        self.metrics = MetricSet([name], features={ext: self.options}, reference={ext: self.ref})
        self.metrics.prepare(self.data, self.data_shape, device, broadcast=broadcast, write_cache=write_cache)

    def update(self, x: Tensor) -> None:
        """Add samples (data space, as stored) to the running statistics."""
        self.metrics.update(x)

    def compute(self) -> dict[str, Any]:
        """{metric, value, ref, extractor}; value is None (with a reason) when fewer than 2 samples exist."""
        out: dict[str, Any] = {"metric": self.names[1], "value": None, "ref": self.ref, "extractor": self.extractor_id}
        try:
            out["value"] = self.metrics.compute_one(self.names[1])
        except ValueError as err:
            out["error"] = str(err)
        return out
