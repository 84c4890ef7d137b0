"""``python -m fastdiff.cli.stats --data digits --features classifier --out ref.npz``: reference feature statistics.

Writes mu, sigma, n, the extractor id (checked by the evaluation callback and ``load_stats``) and, with
``--keep-features N``, the first N feature rows (needed by kid / sliced_w / mmd).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from fastdiff.cli import OneLineArgumentParser, run_cli
from fastdiff.config import ConfigError
from fastdiff.registry import FEATURES


def _options(pairs: list[str], flag: str) -> dict[str, Any]:
    """``key=value`` pairs (values parsed as YAML scalars: 16 -> int, true -> bool, null -> None)."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"{flag} {p!r}: expected key=value")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def parser() -> argparse.ArgumentParser:
    import fastdiff.metrics  # noqa: F401  (registers the feature extractors)

    ap = OneLineArgumentParser(prog="python -m fastdiff.cli.stats", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="registered data set name (digits, toy2d, cifar10, image_folder)")
    ap.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                    help="data set option, repeatable (e.g. root=/data/cifar-10-batches-py, pad_to=16)")
    ap.add_argument("--features", required=True, choices=FEATURES.names(), help="feature extractor")
    ap.add_argument("--feature-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extractor option, repeatable (e.g. weights=fid_helper, weights_path=..., cache_dir=...)")
    ap.add_argument("--out", required=True, help="output .npz")
    ap.add_argument("--max-items", type=int, default=None, help="use at most this many data items")
    ap.add_argument("--keep-features", type=int, default=10000, help="feature rows stored for KID/MMD/SW (0: none)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad arguments or unusable inputs, one ``error:`` line)."""
    return run_cli(_main, sys.argv[1:] if argv is None else argv)


def _check_args(args: argparse.Namespace) -> None:
    """Ranges and the output path, before any data is read or features computed."""
    from pathlib import Path

    from fastdiff.schema.preflight import check_writable_dir

    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--keep-features", args.keep_features, 0),
                             ("--max-items", args.max_items, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag}: {value} is out of range — must be >= {low}")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out: {args.out!r} does not end in .npz — reference statistics are .npz files")
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a directory — give a file path ending in .npz")
    check_writable_dir("--out", out.parent)


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    _check_args(args)
    from fastdiff.metrics.features import FeatureError, get_features
    from fastdiff.metrics.stats import compute_stats, load_data_tensor, save_stats

    try:
        data_opts = _options(args.data_option, "--data-option")
        feat_opts = _options(args.feature_option, "--feature-option")
        x = load_data_tensor(args.data, max_items=args.max_items, **data_opts)
        if args.features == "inception" and not (x.ndim == 4 and x.shape[1] in (1, 3)):
            raise ValueError(f"--features inception needs images [N, 1 or 3, H, W]; {args.data} items have "
                             f"shape {tuple(x.shape[1:])} — use --features raw")
        if args.features == "raw":
            feat_opts.setdefault("data_shape", tuple(x.shape[1:]))
        if args.features == "classifier":
            feat_opts.setdefault("dataset", args.data)
            feat_opts.setdefault("data_shape", tuple(x.shape[1:]))
            feat_opts.setdefault("dataset_options", {k: v for k, v in data_opts.items() if k != "split"})
        extractor = get_features(args.features, **feat_opts).to(args.device)
        stats = compute_stats(extractor, x, keep_features=args.keep_features, batch_size=args.batch_size,
                              device=args.device, source=f"{args.data} {data_opts}")
        path = save_stats(stats, args.out)
    except (ValueError, TypeError, KeyError, FeatureError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}: n={stats.n} features={stats.mu.shape[0]} extractor={stats.extractor} "
          f"kept_rows={0 if stats.features is None else stats.features.shape[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
