"""DiffusionModule: the LightningModule that trains a ScoreModel (Adam + linear warm-up, per-step noise seeds)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from fastdiff.losses import diffusion_loss
from fastdiff.model import ScoreModel, build_score_model
from fastdiff.schema import ModelConfig, OptimConfig, parse_dataclass

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)
VAL_STREAM = 1 << 20  # noise stream of validation batches (training micro-batches use 0 .. accumulate - 1)
GLOBAL_STREAM = 1 << 21  # + micro-batch: seeds the global RNG (dropout) before each training micro-batch


def to_primitive(obj: Any, where: str = "config") -> Any:
    """Deep copy of a config as plain dict/list/str/int/float/bool/None (OmegaConf and numpy values converted)."""
    if isinstance(obj, Mapping):
        return {str(k): to_primitive(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [to_primitive(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalar
        return to_primitive(obj.item(), where)
    raise TypeError(f"{where}: value {obj!r} of type {type(obj).__name__} is not a config primitive "
                    f"(allowed: dict, list, str, int, float, bool, None)")


class LinearWarmup:
    """LR multiplier min(1, (step + 1) / warmup_steps); a class so the scheduler state holds only an int."""

    def __init__(self, warmup_steps: int) -> None:
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A 63-bit seed from (run seed, optimizer step, rank, stream): noise depends on these only, so resume is exact."""
    h = (int(seed) * _MIX[0] + int(step) * _MIX[1] + int(rank) * _MIX[2] + int(stream) * _MIX[3]) & ((1 << 64) - 1)
    h ^= h >> 31
    h = (h * _MIX[1]) & ((1 << 64) - 1)
    h ^= h >> 29
    return h & ((1 << 63) - 1)


class DiffusionModule(LightningModule):
    """Trains ``build_score_model(config, data_shape)`` with the diffusion loss of its parameterization.

    Hyperparameters saved in checkpoints: ``{"config": config, "data_shape": list(data_shape)}``, primitives only.
    Gradient clipping and precision (bf16-mixed) come from the Trainer; EMA from the EMA callback.
    """

    def __init__(self, config: Mapping[str, Any], data_shape: Sequence[int]) -> None:
        super().__init__()
        cfg = to_primitive(config)
        shape = [int(s) for s in data_shape]
        self.save_hyperparameters({"config": cfg, "data_shape": shape})
        self.config = cfg
        self.data_shape = tuple(shape)
        self.model: ScoreModel = build_score_model(cfg, self.data_shape)
        # typed sections, checked by the schema layer (defaults written once, in fastdiff.schema.sections)
        self.model_cfg: ModelConfig = parse_dataclass("model", cfg.get("model") or {}, ModelConfig)
        self.optim_cfg: OptimConfig = parse_dataclass("optim", cfg.get("optim") or {}, OptimConfig)
        self.seed = int(cfg.get("seed", 0) or 0)

    @property
    def P_mean(self) -> float:
        """EDM noise-level mean (from the typed ``model`` section)."""
        return self.model_cfg.P_mean

    @property
    def P_std(self) -> float:
        return self.model_cfg.P_std

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """Score s(z, t)."""
        return self.model(z, t)

    def _data(self, batch: Any) -> Tensor:
        """The data tensor of a batch: a tensor, the first item of a tuple/list, or dict['x']."""
        x = batch
        if isinstance(batch, (list, tuple)):
            x = batch[0]
        elif isinstance(batch, Mapping):
            if "x" not in batch:
                raise ValueError(f"dict batches need an 'x' entry; got keys {sorted(batch)}")
            x = batch["x"]
        if not isinstance(x, Tensor):
            raise TypeError(f"batch must be a Tensor, a (Tensor, ...) tuple or a dict with 'x', got {type(batch).__name__}")
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"batch of shape {tuple(x.shape)} does not match data_shape {self.data_shape} (+ batch dim)")
        return x

    def _generator(self, step: int, stream: int = 0) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(step_seed(self.seed, step, self.global_rank, stream))
        return g

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0 = self._data(batch)
        micro = batch_idx % max(int(self.trainer.accumulate_grad_batches), 1)  # distinct noise per micro-batch
        # dropout draws from the global RNG (CPU and CUDA), which a checkpoint does not hold: seed it by step too
        torch.manual_seed(step_seed(self.seed, self.global_step, self.global_rank, GLOBAL_STREAM + micro))
        loss = diffusion_loss(self.model, x0, self._generator(self.global_step, micro), P_mean=self.P_mean,
                              P_std=self.P_std)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        if self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Loss with fixed noise per batch index (comparable across evaluations), raw weights."""
        x0 = self._data(batch)
        loss = diffusion_loss(self.model, x0, self._generator(batch_idx, VAL_STREAM), P_mean=self.P_mean,
                              P_std=self.P_std)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim_cfg
        opt = torch.optim.Adam(self.parameters(), lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps,
                               weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, LinearWarmup(o.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
