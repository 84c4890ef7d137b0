"""Safe checkpoint loading (torch.load with weights_only=True): rebuild a ScoreModel from a fastdiff checkpoint.

This module does not import Lightning, so sampling scripts stay fast to start.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from typing import Any

import torch
from torch import Tensor

from fastdiff.model import ScoreModel, build_score_model

MODEL_PREFIX = "model."  # DiffusionModule stores the ScoreModel as ``self.model``
EMA_KEY = "EMA"  # EMA.state_key


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, not from fastdiff, or not matching the model)."""


WANT = "— give a checkpoint written by fastdiff's train.py (out_dir/checkpoints/*.ckpt)"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (since torch 1.6)
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # torch's legacy (pre-zip) format opens with this
_PICKLE_PROTO = b"\x80"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _refused_global(err: BaseException) -> str | None:
    """The Python object a refused pickle references (``posix.system``), from torch's refusal text; None if absent.

    Only this name is reported: torch's own text goes on to suggest turning the safety check off, which a
    checkpoint from an unknown source must never get."""
    m = re.search(r"GLOBAL ([\w.]+)", str(err))
    return m.group(1) if m else None


def _check_format(path: str) -> None:
    """Recognise the file before unpickling it, so junk gets a message about what it is, not an unpickler error."""
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path} is an empty file, not a checkpoint {WANT}")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:  # reads the directory at the end of the file only
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path} is truncated or corrupt: a zip archive (the torch.save format) whose "
                                  f"directory cannot be read ({size} bytes: {_first_line(e)}); was the write or copy "
                                  f"cut short? {WANT}") from None
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise CheckpointError(f"{path} is a zip archive but not a torch checkpoint (no data.pkl among "
                                  f"{len(names)} entries) {WANT}")
    elif head.startswith(_LEGACY_MAGIC):
        return  # torch's legacy format
    elif head.startswith(_PICKLE_PROTO):
        raise CheckpointError(f"{path} is a plain Python pickle, not a torch checkpoint (torch.save format) {WANT}")
    else:
        raise CheckpointError(f"{path} is not a torch checkpoint: unrecognised content (starts with {head[:8]!r}; "
                              f"torch.save files are zip archives starting with {_ZIP_MAGIC!r}) {WANT}")


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load(path, weights_only=True) with one-line errors; checks it holds a fastdiff config."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path} {WANT}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory: {path} {WANT}")
    _check_format(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            name = _refused_global(e)
            what = f"a reference to the Python object {name}" if name else "Python objects other than tensors"
            raise CheckpointError(f"{path} is a pickle holding {what}; it cannot be loaded safely (loading it could "
                                  f"run code), so it is refused — use a checkpoint written by fastdiff's train.py, "
                                  f"which holds only tensors, numbers and strings") from None
        raise CheckpointError(f"{path} is a corrupt torch checkpoint: {_first_line(e)} {WANT}") from None
    except Exception as e:  # the unpickler and zip reader raise many types (EOFError, RuntimeError, OSError, ...)
        raise CheckpointError(f"{path} is a corrupt or truncated torch checkpoint: {_first_line(e)} {WANT}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict; "
                              f"not a fastdiff checkpoint {WANT}")
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or not isinstance(hp.get("config"), dict) or "data_shape" not in hp:
        keys = ", ".join(sorted(map(str, ckpt))[:6]) + (", ..." if len(ckpt) > 6 else "")
        what = (f"its hyper_parameters ({', '.join(sorted(map(str, hp))[:6])}) lack"
                if isinstance(hp, dict) else f"it has no hyper_parameters (keys: {keys or 'none'}), so no")
        raise CheckpointError(f"{path} is not a fastdiff checkpoint: {what} 'config' and 'data_shape' "
                              f"(fastdiff's DiffusionModule saves both); was it written by another program? {WANT}")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no 'state_dict' with the model weights {WANT}")
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


def load_score_model(checkpoint: str | os.PathLike[str] | dict[str, Any], use_ema: bool = True,
                     map_location: Any = "cpu") -> ScoreModel:
    """Rebuild the ScoreModel saved in a fastdiff checkpoint (EMA weights if present and ``use_ema``), in eval mode.

    ``checkpoint`` is a path (read once) or a dict from :func:`load_checkpoint`. The model carries what callers need
    from the file, so they need not read it again: ``model.data_shape`` (one sample's shape, a tuple) and
    ``model.config`` (the training config).
    """
    if isinstance(checkpoint, dict):
        ckpt, where = checkpoint, "checkpoint"
    else:
        ckpt, where = load_checkpoint(checkpoint, map_location=map_location), os.fspath(checkpoint)
    hp = ckpt["hyper_parameters"]
    data_shape = tuple(int(s) for s in hp["data_shape"])
    model = build_score_model(hp["config"], data_shape)
    state = _strip(ckpt["state_dict"])
    if use_ema:
        ema = ema_weights(ckpt)
        if ema is None:
            warnings.warn(f"{where} has no EMA weights; loading the raw weights", stacklevel=2)
        else:
            state.update(_strip(ema))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{where} does not match the model built from its config: "
                              f"missing keys {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                              f"unexpected keys {unexpected[:3]}{'...' if len(unexpected) > 3 else ''} {WANT}")
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{where}: shape mismatch for {k}: checkpoint {tuple(state[k].shape)}, "
                              f"model {tuple(expected[k].shape)} {WANT}")
    model.load_state_dict(state)
    model.data_shape = data_shape
    model.config = hp["config"]
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
