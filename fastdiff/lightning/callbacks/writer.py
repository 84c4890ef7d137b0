"""Writing generated samples under their seeds, atomically and resumably, plus the per-batch writer callback.

Layout of an output directory (the format follows the data shape):
- images [C, H, W] with C in {1, 3}: ``000000/000123.png`` (1000-seed subfolders as in EDM's generate.py; uint8
  from [-1, 1] by rounding; grayscale PNG for one channel);
- anything else (vectors): ``.npz`` shards ``shard_<first seed>-<last seed>.npz`` holding ``seeds`` [n] (int64) and
  ``x`` [n, ...] (float32), one shard per predict batch.
Every file is written to a temporary name in its final folder and moved into place with ``os.replace``, so a crash
never leaves a partial sample: a rerun treats a PNG that exists / a seed held by a shard as finished.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from fastdiff.utils.distributed import gather_lists, gather_rows
from fastdiff.utils.files import TMP_MARK, atomic_write
from fastdiff.utils.images import from_uint8, to_uint8

__all__ = ["SampleStore", "SampleWriter", "is_image_shape", "load_samples", "read_png",
           "TMP_MARK", "atomic_write", "to_uint8", "gather_rows", "gather_lists"]  # helpers re-exported for callers

SHARD_RE = re.compile(r"shard_(\d+)-(\d+)\.npz")


def is_image_shape(data_shape: Sequence[int]) -> bool:
    """Whether samples of this shape are written as PNG images ([1 or 3, H, W])."""
    return len(data_shape) == 3 and int(data_shape[0]) in (1, 3)


class SampleStore:
    """The files of one output directory: which seeds are finished, writing and reading samples by seed."""

    def __init__(self, out_dir: str | os.PathLike[str], data_shape: Sequence[int]) -> None:
        self.out_dir = Path(out_dir)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.format = "png" if is_image_shape(self.data_shape) else "npz"
        self._shard_of: dict[int, Path] | None = None

    # ---- layout -------------------------------------------------------------------------------------------------
    def png_path(self, seed: int) -> Path:
        """``out/000000/000123.png``: seeds grouped in folders of 1000 (EDM's layout)."""
        return self.out_dir / f"{seed - seed % 1000:06d}" / f"{seed:06d}.png"

    def shard_path(self, seeds: Sequence[int]) -> Path:
        """``out/shard_<first>-<last>.npz``; the first seed of a new shard is never finished, so names never clash."""
        return self.out_dir / f"shard_{seeds[0]:06d}-{seeds[-1]:06d}.npz"

    def shard_files(self) -> list[Path]:
        return sorted(p for p in self.out_dir.glob("shard_*.npz") if SHARD_RE.fullmatch(p.name))

    def _shard_index(self) -> dict[int, Path]:
        """seed -> shard file, read from every shard's ``seeds`` array (cheap: npz loads arrays lazily)."""
        index: dict[int, Path] = {}
        for path in self.shard_files():
            try:
                with np.load(path, allow_pickle=False) as z:
                    seeds = z["seeds"].tolist()
            except Exception as err:  # noqa: BLE001 - a damaged shard is reported, never trusted
                raise ValueError(f"{path} is not a readable sample shard ({type(err).__name__}) "
                                 "— delete it and rerun to regenerate its seeds") from None
            for s in seeds:
                index[int(s)] = path
        return index

    def finished(self, seeds: Sequence[int]) -> set[int]:
        """The seeds among ``seeds`` whose samples are already on disk."""
        if self.format == "npz":
            self._shard_of = self._shard_index()
            return {s for s in seeds if s in self._shard_of}
        listing: dict[int, set[str]] = {}
        done = set()
        for s in seeds:
            folder = s - s % 1000
            if folder not in listing:
                d = self.out_dir / f"{folder:06d}"
                listing[folder] = set(os.listdir(d)) if d.is_dir() else set()
            if f"{s:06d}.png" in listing[folder]:
                done.add(s)
        return done

    def remove_temporaries(self) -> int:
        """Delete temporary files left by a crashed run (call on one rank, before anyone writes)."""
        count = 0
        if not self.out_dir.is_dir():
            return 0
        folders = [self.out_dir] + [p for p in self.out_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d{6,}", p.name)]
        for folder in folders:
            for p in folder.iterdir():
                if p.name.startswith(".") and TMP_MARK in p.name and p.is_file():
                    p.unlink(missing_ok=True)
                    count += 1
        return count

    # ---- writing and reading ------------------------------------------------------------------------------------
    def write(self, seeds: Sequence[int], x: Tensor) -> Tensor:
        """Write samples ``x`` [n, *data_shape] under their seeds; returns what was stored (uint8 or float32, CPU)."""
        seeds = [int(s) for s in seeds]
        if not seeds:
            return torch.empty(0)
        if tuple(x.shape) != (len(seeds), *self.data_shape):
            raise ValueError(f"samples of shape {tuple(x.shape)} do not match {len(seeds)} seeds x {self.data_shape}")
        if self.format == "png":
            stored = to_uint8(x.cpu())
            for s, img in zip(seeds, stored):
                self._write_png(self.png_path(s), img)
            return stored
        stored = x.detach().to("cpu", torch.float32).contiguous()
        path = self.shard_path(seeds)
        arrays = {"seeds": np.asarray(seeds, dtype=np.int64), "x": stored.numpy()}

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: numpy must not append ".npz" to the temporary name
                np.savez(f, **arrays)

        atomic_write(path, save)
        return stored

    @staticmethod
    def _write_png(path: Path, img: Tensor) -> None:
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        arr = img.permute(1, 2, 0).numpy()
        pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr, mode="L" if arr.shape[-1] == 1 else "RGB")
        atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))

    def read(self, seeds: Sequence[int]) -> Tensor:
        """Stored samples for ``seeds`` (uint8 [n, C, H, W] for PNG, float32 [n, ...] for shards), in that order."""
        if self.format == "png":
            return torch.stack([read_png(self.png_path(int(s))) for s in seeds]) if seeds else torch.empty(0)
        if self._shard_of is None or any(int(s) not in self._shard_of for s in seeds):
            self._shard_of = self._shard_index()
        out: list[Tensor] = []
        cache: dict[Path, dict[int, Tensor]] = {}
        for s in seeds:
            path = self._shard_of.get(int(s))
            if path is None:
                raise FileNotFoundError(f"seed {s} is in no shard under {self.out_dir}")
            if path not in cache:
                with np.load(path, allow_pickle=False) as z:
                    cache[path] = dict(zip(z["seeds"].tolist(), torch.from_numpy(z["x"])))
            out.append(cache[path][int(s)])
        return torch.stack(out) if out else torch.empty(0)

    def as_model_space(self, stored: Tensor) -> Tensor:
        """Stored samples as the data-space float tensor metrics see (uint8 images back to [-1, 1])."""
        return from_uint8(stored) if self.format == "png" else stored.float()


def read_png(path: Path) -> Tensor:
    """A PNG as uint8 [C, H, W] (C = 1 for grayscale)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def load_samples(out_dir: str | os.PathLike[str]) -> tuple[list[int], Tensor]:
    """Every sample in an output directory, sorted by seed: (seeds, uint8 images [N, C, H, W] or float32 [N, ...])."""
    root = Path(out_dir)
    shards = sorted(p for p in root.glob("shard_*.npz") if SHARD_RE.fullmatch(p.name))
    if shards:
        pairs: dict[int, Tensor] = {}
        for p in shards:
            with np.load(p, allow_pickle=False) as z:
                pairs.update(zip(z["seeds"].tolist(), torch.from_numpy(z["x"])))
        seeds = sorted(pairs)
        return seeds, torch.stack([pairs[s] for s in seeds])
    files = sorted(root.glob("[0-9]*/[0-9]*.png"), key=lambda p: int(p.stem))
    if not files:
        raise FileNotFoundError(f"no samples (PNG files or shard_*.npz) under {root}")
    return [int(p.stem) for p in files], torch.stack([read_png(p) for p in files])


class SampleWriter(Callback):
    """Writes each predict batch as it is produced (nothing is kept in memory), counts NFE, feeds the optional
    Fréchet-distance metric, and at the end reduces the counts over ranks (every rank takes part)."""

    def __init__(self, store: SampleStore, fid: Any = None) -> None:
        super().__init__()
        self.store = store
        self.fid = fid  # fastdiff.lightning.generate.FIDRequest or None
        self.reset()

    def reset(self) -> None:
        self.generated = 0
        self.skipped = 0
        self.nfe_sum = 0.0
        self.nfe_max = 0
        self.failed: list[int] = []
        self.start = 0.0
        self.totals: dict[str, Any] = {}

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.reset()
        if trainer.is_global_zero:
            self.store.out_dir.mkdir(parents=True, exist_ok=True)
            self.store.remove_temporaries()
        trainer.strategy.barrier("fastdiff-sample-start")  # nobody writes before the clean-up is done
        if self.fid is not None:
            broadcast = trainer.strategy.broadcast if trainer.world_size > 1 else None
            with torch.enable_grad():  # a classifier feature extractor may need training on first use
                self.fid.prepare(pl_module.device, broadcast, write_cache=trainer.is_global_zero)
        self.start = time.perf_counter()

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        seeds, skipped = outputs["seeds"], outputs["skipped"]
        stored = self.store.write(seeds, outputs["x"]) if seeds else None
        if seeds:
            nfe = outputs["nfe"]
            self.generated += len(seeds)
            self.nfe_sum += float(nfe.double().sum())
            self.nfe_max = max(self.nfe_max, int(nfe.max()))
        self.skipped += len(skipped)
        self.failed.extend(outputs["failed"])
        if self.fid is not None:
            if stored is not None:
                self.fid.update(self.store.as_model_space(stored).to(pl_module.device))
            if skipped:  # finished in an earlier run: its files enter the statistics as they are on disk
                self.fid.update(self.store.as_model_space(self.store.read(skipped)).to(pl_module.device))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        elapsed = time.perf_counter() - self.start
        local = torch.tensor([self.generated, self.skipped, len(self.failed), self.nfe_sum, self.nfe_max, elapsed],
                             dtype=torch.float64, device=pl_module.device)
        rows = gather_rows(local, trainer.world_size)
        generated, skipped, failed, nfe_sum = (float(v) for v in rows[:, :4].sum(0))
        seconds = float(rows[:, 5].max())
        self.totals = {
            "samples": int(generated + skipped), "generated": int(generated), "skipped": int(skipped),
            "failed": int(failed), "failed_seeds": sorted(gather_lists(self.failed, trainer.world_size)),
            "nfe_mean": nfe_sum / generated if generated else None,
            "nfe_max": int(rows[:, 4].max()) if generated else None, "seconds": seconds,
            "samples_per_s": generated / seconds if generated and seconds > 0 else None,
            "world_size": trainer.world_size,
        }
        if self.fid is not None:
            self.totals["fid"] = self.fid.compute()  # torchmetrics sums the float64 states over ranks
