"""One progress bar per job: training is one bar over ``max_steps`` (step, loss, it/s, ETA) instead of Lightning's
per-epoch bars (the default job has 208 "epochs" of 12 batches); prediction (sample.py) is one bar over the
samples of this rank. Validation batches show no bar (they take a fraction of a second); the evaluation callback
draws its own line per evaluation. Rank 0 only; written to stderr."""
from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


class StepProgressBar(ProgressBar):
    """tqdm bar over optimizer steps (resumed runs start at the checkpoint's step) and over predicted samples."""

    def __init__(self, mininterval: float = 0.5) -> None:
        super().__init__()
        self.mininterval = float(mininterval)
        self._enabled = True
        self.bar: Any = None

    # ---- ProgressBar interface --------------------------------------------------------------------------------
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _open(self, trainer: Trainer, **kwargs: Any) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(dynamic_ncols=True, file=sys.stderr, mininterval=self.mininterval, smoothing=0.1, **kwargs)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # ---- training ---------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._open(trainer, total=trainer.max_steps, initial=trainer.global_step, desc="train", unit="step")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.bar is None:
            return
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self.bar.set_postfix_str(f"loss={float(loss):.4f}", refresh=False)
        self.bar.update(trainer.global_step - self.bar.n)  # 0 within an accumulation window

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()

    # ---- prediction (sample.py) -------------------------------------------------------------------------------
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seeds = getattr(pl_module, "rank_seed_count", None)
        total = seeds() if callable(seeds) else None
        self._open(trainer, total=total, desc="sample", unit="sample")

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.bar is not None and isinstance(outputs, dict):
            self.bar.update(len(outputs.get("seeds", ())) + len(outputs.get("skipped", ())))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close()
