"""Image data sets: a recursive PNG/JPEG folder and CIFAR-10 from its local python-pickle batches."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from fastdiff.registry import DATASETS
from fastdiff.utils.images import from_uint8

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


uint8_to_unit = from_uint8  # uint8 pixels 0..255 -> float32 in [-1, 1] (x / 127.5 - 1)


# ----------------------------------------------------------------------------------------- folder


def _load_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """PIL: convert to RGB/L, center-crop to a square, bicubic resize; returns uint8 [C, H, W]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            if side != image_size:
                im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
            arr = np.array(im, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read image {str(path)!r}: {err}") from err
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _normalise_extensions(extensions: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    exts = tuple(sorted({("." + e.lower().lstrip(".")) for e in extensions}))
    if not exts or any(e == "." for e in exts):
        raise ValueError(f"image_folder extensions must be non-empty names like '.png', got {extensions!r}")
    return exts


@DATASETS.register("image_folder")
class ImageFolder(Dataset):
    """All images under ``root`` (recursive, sorted paths), center-cropped, resized, scaled to [-1, 1]."""

    kind = "image"

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        channels: int = 3,
        extensions: Iterable[str] = (".png", ".jpg", ".jpeg"),
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_folder image_size must be a positive int, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"image_folder channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: image_folder root {str(self.root)!r} does not exist or is not a directory "
                                    "— give a folder of images")
        self.extensions = _normalise_extensions(extensions)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in self.extensions and p.is_file())
        if not self.files:
            raise FileNotFoundError(
                f"root: image_folder found no images with extensions {', '.join(self.extensions)} "
                f"under {str(self.root)!r} (searched recursively) — give a folder holding images"
            )
        self.image_size = image_size
        self.channels = channels

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return uint8_to_unit(_load_image(self.files[index], self.image_size, self.channels))

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, n={len(self)}, data_shape={self.data_shape})"


# ---------------------------------------------------------------------------------------- CIFAR-10


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, restricted to latin-1."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}; only latin-1 is allowed")
    return obj.encode("latin1", errors)


def _frombuffer(buf: Any, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    """Rebuild an array from a protocol-5 pickle buffer (what numpy's own helper does)."""
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's ndarray _reconstruct, whatever module holds it
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array-reconstruction globals, so loading cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted({f"{m}.{n}" for m, n in _SAFE_GLOBALS}))
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from a data pickle; allowed: {allowed}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a data pickle")


def load_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one CIFAR-10 python batch safely: (data uint8 [N, 3072], labels int64 [N] or None)."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(f"{path}: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict with b'data' and b'labels', got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: b'data' must be a uint8 array [N, 3072], got {got}")
    labels = obj.get(b"labels", obj.get("labels"))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape[0] != data.shape[0]:
            raise ValueError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    return data, labels


def _cifar_folder(root: Path, files: tuple[str, ...]) -> Path:
    for folder in (root / CIFAR_FOLDER, root):
        if all((folder / name).is_file() for name in files):
            return folder
    raise FileNotFoundError(
        f"root: cifar10 needs the python batches {', '.join(files)}; not all found in {str(root)!r} "
        f"nor in {str(root / CIFAR_FOLDER)!r} — point root at {CIFAR_FOLDER} or its parent"
    )


@DATASETS.register("cifar10")
class CIFAR10(Dataset):
    """CIFAR-10 from the standard local ``cifar-10-batches-py`` pickles (safe loader), [3, 32, 32] in [-1, 1]."""

    kind = "image"
    val_split = "test"

    def __init__(self, root: str | Path, split: str = "train") -> None:
        if split not in CIFAR_FILES:
            raise ValueError(f"unknown cifar10 split {split!r}; allowed: {', '.join(CIFAR_FILES)}")
        self.root = Path(root).expanduser()
        self.folder = _cifar_folder(self.root, CIFAR_FILES[split])
        batches = [load_cifar_batch(self.folder / name) for name in CIFAR_FILES[split]]
        data = np.concatenate([d for d, _ in batches], axis=0)
        self.data = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
        labels = [lab for _, lab in batches]
        self.labels = torch.from_numpy(np.concatenate(labels)) if all(lab is not None for lab in labels) else None
        self.split = split

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (3, 32, 32)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return uint8_to_unit(self.data[index])

    def __repr__(self) -> str:
        return f"CIFAR10(folder={str(self.folder)!r}, split={self.split!r}, n={len(self)})"
