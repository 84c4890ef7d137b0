"""Exponential moving average of the weights (Polyak averaging; warm-up as in Song et al.'s score_sde / DDPM)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor


class EMA(Callback):
    """Fp32 shadow weights updated after every optimizer step; saved in the checkpoint so resume is exact.

    decay_n = min(decay, (1 + n) / (10 + n)) with n the number of updates so far when ``warmup`` is on.
    All ranks update identically (no rank-0-only work). Checkpoints always hold the raw weights in
    ``state_dict`` and the shadow in the callback state, even when saved inside :meth:`averaged`.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {}
        self._backup: dict[str, Tensor] | None = None
        self._last_step = -1

    @property
    def state_key(self) -> str:
        return "EMA"

    # ---- bookkeeping -----------------------------------------------------------------------------------
    @staticmethod
    def _params(pl_module: LightningModule) -> dict[str, Tensor]:
        return {name: p for name, p in pl_module.named_parameters()}

    def current_decay(self) -> float:
        """Decay used for the next update."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params = self._params(pl_module)
        if not self.shadow:  # fresh run (a resume filled the shadow in load_state_dict)
            self.shadow = {n: p.detach().to(torch.float32).clone() for n, p in params.items()}
        else:
            missing = sorted(set(params) - set(self.shadow))
            extra = sorted(set(self.shadow) - set(params))
            if missing or extra:
                raise RuntimeError(f"EMA state does not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
            self.shadow = {n: v.to(device=params[n].device, dtype=torch.float32) for n, v in self.shadow.items()}
        self._last_step = trainer.global_step

    @torch.no_grad()
    def update(self, pl_module: LightningModule) -> None:
        """shadow <- d shadow + (1 - d) params, with d = :meth:`current_decay`."""
        if self._backup is not None:
            raise RuntimeError("EMA.update called while EMA weights are swapped in")
        d = self.current_decay()
        names, shadows, params = [], [], []
        for name, p in self._params(pl_module).items():
            names.append(name)
            shadows.append(self.shadow[name])
            params.append(p.detach().to(torch.float32))
        torch._foreach_lerp_(shadows, params, 1.0 - d)
        self.num_updates += 1

    def catch_up(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Apply this optimizer step's update if it has not happened yet (idempotent within a step), so a callback
        that runs before this one in the same hook still sees the EMA of the current step."""
        # update once per optimizer step (gradient accumulation runs the hook without a step)
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.update(pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.catch_up(trainer, pl_module)

    # ---- swapping ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def swap_in(self, pl_module: LightningModule) -> None:
        """Copy the EMA weights into the module (the raw weights are kept aside)."""
        if self._backup is not None:
            raise RuntimeError("EMA weights are already swapped in")
        if not self.shadow:
            raise RuntimeError("EMA has no shadow weights yet (fit has not started)")
        params = self._params(pl_module)
        self._backup = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(self.shadow[n])

    @torch.no_grad()
    def swap_out(self, pl_module: LightningModule) -> None:
        """Restore the raw weights saved by :meth:`swap_in`."""
        if self._backup is None:
            raise RuntimeError("EMA weights are not swapped in")
        for n, p in self._params(pl_module).items():
            p.copy_(self._backup[n])
        self._backup = None

    @contextmanager
    def averaged(self, pl_module: LightningModule) -> Iterator[LightningModule]:
        """``with ema.averaged(module):`` run with EMA weights, raw weights restored afterwards (even on error)."""
        self.swap_in(pl_module)
        try:
            yield pl_module
        finally:
            self.swap_out(pl_module)

    @property
    def swapped_in(self) -> bool:
        return self._backup is not None

    # ---- checkpointing ----------------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._backup is None:
            return
        # saved while swapped in: put the raw weights back into the checkpoint's state_dict
        sd = checkpoint.get("state_dict", {})
        for n, raw in self._backup.items():
            if n in sd:
                sd[n] = raw.detach().to(device=sd[n].device, dtype=sd[n].dtype).clone()

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {n: v.detach().clone() for n, v in self.shadow.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in ("num_updates", "shadow"):
            if key not in state_dict:
                raise KeyError(f"EMA checkpoint state lacks {key!r}; has: {', '.join(state_dict)}")
        self.num_updates = int(state_dict["num_updates"])
        self.shadow = {n: v.detach().to(torch.float32).clone() for n, v in state_dict["shadow"].items()}


def find_ema(trainer: Trainer) -> EMA | None:
    """The trainer's EMA callback, or None."""
    for cb in trainer.callbacks:
        if isinstance(cb, EMA):
            return cb
    return None
