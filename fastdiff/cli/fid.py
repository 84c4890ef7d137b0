"""``python -m fastdiff.cli.fid A B [--kid]``: the standard FID (and KID) between two image sets.

A and B are each a folder of images (PNG/JPEG/BMP/WebP, searched recursively, RGB or grayscale), a folder of
``shard_*.npz`` sample shards or one ``.npz`` holding an image array ``x`` [N, C, H, W] (uint8, or float in [-1, 1]
as sample.py writes), or reference statistics from ``python -m fastdiff.cli.stats --features inception``.
Images go through fastdiff's FID-Inception (uint8 RGB, TF1 bilinear resize to 299, pool3); two statistics files
need no network. Prints ``fid <value>`` (and ``kid <mean> +- <std>``) and exits 0; bad input: one line, exit 2.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ALLOWED = ("a folder of images, a folder of shard_*.npz, an .npz with an image array 'x', or reference "
           "statistics (.npz from python -m fastdiff.cli.stats)")


class FIDInputError(ValueError):
    """An input that cannot be used; the message is one line."""


@dataclass
class ImageSet:
    """Where one side's images or statistics come from (checked before any feature is computed)."""

    path: Path
    kind: str  # "images", "shards", "array", "stats"
    files: list[Path]
    stats: Any = None

    def __len__(self) -> int:
        if self.kind == "stats":
            return int(self.stats.n)
        if self.kind == "images":
            return len(self.files)
        return sum(_npz_rows(f) for f in self.files)

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """uint8 [n, C, H, W] batches; consecutive images of one size share a batch."""
        if self.kind == "images":
            run: list[Tensor] = []
            for f in self.files:
                img = _read_image(f)
                if run and (img.shape != run[0].shape or len(run) == batch_size):
                    yield torch.stack(run)
                    run = []
                run.append(img)
            if run:
                yield torch.stack(run)
            return
        for f in self.files:
            x = _npz_images(f)
            for i in range(0, x.shape[0], batch_size):
                yield x[i:i + batch_size]


def _read_image(path: Path) -> Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("L" if im.mode in ("L", "I;16", "1") else "RGB"))
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def _npz_rows(path: Path) -> int:
    with np.load(path, allow_pickle=False) as z:
        return int(z["x"].shape[0])


def _npz_images(path: Path) -> Tensor:
    """An image array as uint8 [N, C, H, W]; floats are data space [-1, 1], rounded as sample.py's PNGs are."""
    with np.load(path, allow_pickle=False) as z:
        x = torch.from_numpy(z["x"])
    if x.dtype == torch.uint8:
        return x
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _check_array(path: Path) -> None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise FIDInputError(f"{path} holds neither reference statistics (mu, sigma, extractor) nor an image "
                                    f"array 'x' (keys: {', '.join(z.files)}) — allowed: {ALLOWED}")
            shape, dtype = z["x"].shape, z["x"].dtype
    except (OSError, ValueError) as err:
        if isinstance(err, FIDInputError):
            raise
        raise FIDInputError(f"{path} is not a readable .npz ({err}) — allowed: {ALLOWED}") from None
    if len(shape) != 4 or shape[1] not in (1, 3) or not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise FIDInputError(f"{path}: 'x' has shape {shape} and dtype {dtype}; FID needs images [N, 1 or 3, H, W], "
                            "uint8 or float in [-1, 1] — allowed: " + ALLOWED)


def open_set(arg: str) -> ImageSet:
    """Classify one command-line input; every problem found here is reported before the network is built."""
    from fastdiff.metrics.stats import load_stats

    path = Path(arg).expanduser()
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                is_stats = "mu" in z.files and "extractor" in z.files
        except Exception as err:  # noqa: BLE001 - zip, pickle and OS errors all mean "not an npz we can read"
            raise FIDInputError(f"{path} is not a readable .npz ({type(err).__name__}: {err}) — allowed: "
                                f"{ALLOWED}") from None
        if is_stats:
            try:
                return ImageSet(path, "stats", [], load_stats(path))
            except ValueError as err:
                raise FIDInputError(f"{err} — allowed: {ALLOWED}") from None
        _check_array(path)
        return ImageSet(path, "array", [path])
    if path.is_dir():
        shards = sorted(path.glob("shard_*.npz"))
        if shards:
            for s in shards:
                _check_array(s)
            return ImageSet(path, "shards", shards)
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise FIDInputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no shard_*.npz — "
                                f"allowed: {ALLOWED}")
        return ImageSet(path, "images", files)
    what = "does not exist" if not path.exists() else "is neither a folder nor an .npz file"
    raise FIDInputError(f"{path} {what} — allowed: {ALLOWED}")


def features_of(s: ImageSet, extractor: Any, batch_size: int) -> Tensor:
    return torch.cat([extractor.features_uint8(b).double().cpu() for b in s.batches(batch_size)])


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default prints the usage first)
        print(f"error: {message} — run with --help for the allowed arguments", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m fastdiff.cli.fid", description=__doc__.splitlines()[0])
    ap.add_argument("a", help=ALLOWED)
    ap.add_argument("b", help="the other set (same kinds)")
    ap.add_argument("--kid", action="store_true", help="also print KID (statistics files need kept feature rows)")
    ap.add_argument("--kid-subsets", type=int, default=100)
    ap.add_argument("--kid-subset-size", type=int, default=1000)
    ap.add_argument("--weights", default="auto", choices=("auto", "standard", "fid_helper"),
                    help="Inception weights source (see fastdiff.metrics.inception_weights)")
    ap.add_argument("--weights-path", default=None, help="pt_inception-2015-12-05-6726825d.pth (or default_1.pt)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Compute and return {fid, kid?, kid_std?, n_a, n_b, extractor}."""
    from fastdiff.metrics.features import InceptionFeatures
    from fastdiff.metrics.fid import frechet_distance, kid_subsets, mean_cov

    for name in ("batch_size", "kid_subsets", "kid_subset_size"):
        if getattr(args, name) < 1:
            raise FIDInputError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    sets = [open_set(args.a), open_set(args.b)]
    for s in sets:
        if s.kind == "stats":
            if not s.stats.extractor.startswith("inception"):
                raise FIDInputError(f"{s.path} holds {s.stats.extractor!r} features; FID needs Inception statistics "
                                    "(python -m fastdiff.cli.stats --features inception)")
            if args.kid and s.stats.features is None:
                raise FIDInputError(f"--kid: {s.path} holds no feature rows; recompute it with --keep-features N")
        elif len(s) < 2:
            raise FIDInputError(f"{s.path} holds {len(s)} image(s); FID needs at least 2")
    extractor = None
    if any(s.kind != "stats" for s in sets):
        extractor = InceptionFeatures(weights_path=args.weights_path, weights=args.weights).to(args.device)
    ids = [s.stats.extractor if s.kind == "stats" else extractor.extractor_id for s in sets]
    if ids[0] != ids[1]:
        raise FIDInputError(f"the inputs use different Inception weights ({ids[0]!r} vs {ids[1]!r}); compute both "
                            "with the same --weights")
    moments, rows = [], []
    for s in sets:
        if s.kind == "stats":
            moments.append((s.stats.mu, s.stats.sigma))
            rows.append(s.stats.features)
        else:
            f = features_of(s, extractor, args.batch_size)
            moments.append(mean_cov(f))
            rows.append(f)
    out: dict[str, Any] = {"fid": float(frechet_distance(*moments[0], *moments[1])), "n_a": len(sets[0]),
                           "n_b": len(sets[1]), "extractor": ids[0]}
    if args.kid:
        mean, std = kid_subsets(rows[0], rows[1], args.kid_subsets, args.kid_subset_size)
        out["kid"], out["kid_std"] = float(mean), float(std)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad arguments or unusable inputs)."""
    from fastdiff.metrics.features import FeatureError
    from fastdiff.metrics.stats import StatsMismatchError

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = run(args)
    except (FIDInputError, FeatureError, StatsMismatchError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"fid {out['fid']:.6f}")
    if "kid" in out:
        print(f"kid {out['kid']:.6f} +- {out['kid_std']:.6f}")
    print(f"({out['n_a']} vs {out['n_b']} images, features {out['extractor']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
