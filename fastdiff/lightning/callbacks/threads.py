"""ThreadPolicy: keep torch's intra-op thread count at the number of free cores while training or sampling
(see :mod:`fastdiff.utils.threads`; a pinned FASTDIFF_THREADS / OMP_NUM_THREADS turns it off)."""
from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from fastdiff.utils.threads import ThreadGovernor


class ThreadPolicy(Callback):
    """Polls a :class:`ThreadGovernor` after every training / predict batch (it measures every ``interval_s``)."""

    def __init__(self, interval_s: float = 2.0) -> None:
        super().__init__()
        self.governor = ThreadGovernor(interval_s)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.governor.poll()

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self.governor.poll()
