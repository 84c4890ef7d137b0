"""Safe checkpoint loading (torch.load with weights_only=True): rebuild a ScoreModel from a fastdiff checkpoint.

This module does not import Lightning, so sampling scripts stay fast to start.
"""
from __future__ import annotations

import os
import pickle
import warnings
from typing import Any

import torch
from torch import Tensor

from fastdiff.model import ScoreModel, build_score_model

MODEL_PREFIX = "model."  # DiffusionModule stores the ScoreModel as ``self.model``
EMA_KEY = "EMA"  # EMA.state_key


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, not from fastdiff, or not matching the model)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load(path, weights_only=True) with one-line errors; checks it holds a fastdiff config."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory, expected a .ckpt file: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = _first_line(e)
        if "weights only" in msg.lower() or "weights_only" in msg.lower():
            raise CheckpointError(f"{path} holds objects other than tensors and primitives, refused by "
                                  f"weights_only loading (a checkpoint must not be able to run code): {msg}") from None
        raise CheckpointError(f"{path} is not a torch checkpoint or is corrupt: {msg}") from None
    except Exception as e:  # the unpickler raises many types (IndexError, EOFError, RuntimeError, ...) on junk
        raise CheckpointError(f"{path} is not a torch checkpoint or is corrupt: {_first_line(e)}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or not isinstance(hp.get("config"), dict) or "data_shape" not in hp:
        raise CheckpointError(f"{path} has no fastdiff config (hyper_parameters 'config' and 'data_shape'); "
                              f"was it written by fastdiff's DiffusionModule?")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no 'state_dict' with the model weights")
    return ckpt


def ema_weights(ckpt: dict[str, Any]) -> dict[str, Tensor] | None:
    """The EMA shadow weights stored by the EMA callback (keys as in the module state_dict), or None."""
    callbacks = ckpt.get("callbacks") or {}
    state = callbacks.get(EMA_KEY)
    if state is None:
        state = next((v for k, v in callbacks.items() if str(k).startswith(EMA_KEY) and isinstance(v, dict)
                      and "shadow" in v), None)
    return None if state is None else state.get("shadow")


def _strip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[len(MODEL_PREFIX):]: v for k, v in sd.items() if k.startswith(MODEL_PREFIX)}


def load_score_model(path: str | os.PathLike[str], use_ema: bool = True, map_location: Any = "cpu") -> ScoreModel:
    """Rebuild the ScoreModel saved in a fastdiff checkpoint (EMA weights if present and ``use_ema``), in eval mode."""
    ckpt = load_checkpoint(path, map_location=map_location)
    hp = ckpt["hyper_parameters"]
    model = build_score_model(hp["config"], tuple(hp["data_shape"]))
    state = _strip(ckpt["state_dict"])
    if use_ema:
        ema = ema_weights(ckpt)
        if ema is None:
            warnings.warn(f"{os.fspath(path)} has no EMA weights; loading the raw weights", stacklevel=2)
        else:
            state.update(_strip(ema))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{os.fspath(path)} does not match the model built from its config: "
                              f"missing keys {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                              f"unexpected keys {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{os.fspath(path)}: shape mismatch for {k}: checkpoint {tuple(state[k].shape)}, "
                              f"model {tuple(expected[k].shape)}")
    model.load_state_dict(state)
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
