"""Reference statistics: mean, covariance, count and extractor id of a data set's features, saved as .npz.

An .npz holds ``mu`` [F], ``sigma`` [F, F] (float64, unbiased), ``n``, ``extractor`` (the feature extractor's id),
``source`` (a description of the data) and optionally ``features`` [M, F] (a prefix of the feature rows, for KID,
MMD and sliced Wasserstein). Loading with an expected extractor id refuses stats from another extractor.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from fastdiff.metrics.fid import mean_cov


class StatsMismatchError(ValueError):
    """Reference statistics were computed with a different feature extractor."""


@dataclass
class ReferenceStats:
    """Feature statistics of a reference set."""

    mu: Tensor
    sigma: Tensor
    n: int
    extractor: str
    source: str = ""
    features: Tensor | None = None

    def check_extractor(self, extractor_id: str, where: str = "reference statistics") -> None:
        if self.extractor != extractor_id:
            raise StatsMismatchError(f"{where} were computed with feature extractor {self.extractor!r}, but this "
                                     f"evaluation uses {extractor_id!r}; recompute them with python -m "
                                     "fastdiff.cli.stats using the same features and options")


def load_data_tensor(name: str, max_items: int | None = None, **options: Any) -> Tensor:
    """The items of registered data set ``name`` stacked into one tensor (training split where there is one)."""
    from fastdiff.registry import DATASETS, build

    import fastdiff.data  # noqa: F401  (registers the data sets)

    cls = DATASETS.get(name)
    if getattr(cls, "val_split", None) is not None and "split" not in options:
        options = {**options, "split": "train"}
    ds = build(DATASETS, name, **options)
    data = getattr(ds, "data", None)
    if isinstance(data, Tensor) and data.is_floating_point() and data.shape[0] == len(ds):  # items are rows of .data
        x = data
    else:
        x = torch.stack([ds[i] for i in range(len(ds) if max_items is None else min(len(ds), max_items))])
    return x[:max_items] if max_items is not None else x


def batched_features(extractor: torch.nn.Module, data: Tensor, batch_size: int = 256,
                     device: torch.device | str | None = None) -> Tensor:
    """Features of ``data`` computed in batches (no grad), returned on the CPU as float64."""
    out = []
    dev = torch.device(device) if device is not None else torch.device("cpu")
    with torch.no_grad():
        for start in range(0, data.shape[0], batch_size):
            out.append(extractor(data[start:start + batch_size].to(dev)).double().cpu())
    return torch.cat(out)


def compute_stats(extractor: Any, data: Tensor | Iterable[Tensor], keep_features: int = 0, batch_size: int = 256,
                  device: torch.device | str | None = None, source: str = "") -> ReferenceStats:
    """Reference statistics of ``data`` (a tensor or an iterable of batches) under ``extractor``."""
    if isinstance(data, Tensor):
        feats = batched_features(extractor, data, batch_size, device)
    else:
        feats = torch.cat([batched_features(extractor, b, batch_size, device) for b in data])
    mu, sigma = mean_cov(feats)
    kept = feats[:keep_features].clone() if keep_features > 0 else None
    return ReferenceStats(mu=mu, sigma=sigma, n=int(feats.shape[0]), extractor=extractor.extractor_id,
                          source=source, features=kept)


def save_stats(stats: ReferenceStats, path: str | os.PathLike[str]) -> Path:
    """Write an .npz atomically (temporary file + rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"reference statistics are written as .npz; got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"mu": stats.mu.double().numpy(), "sigma": stats.sigma.double().numpy(),
                              "n": np.int64(stats.n), "extractor": np.str_(stats.extractor),
                              "source": np.str_(stats.source)}
    if stats.features is not None:
        arrays["features"] = stats.features.double().numpy()
    from fastdiff.utils.files import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: numpy must not append ".npz" to the temporary name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load_stats(path: str | os.PathLike[str], extractor_id: str | None = None) -> ReferenceStats:
    """Read an .npz written by :func:`save_stats`; with ``extractor_id``, refuse stats of another extractor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} do not exist; create them with "
                                "python -m fastdiff.cli.stats --data NAME --features NAME --out FILE.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("mu", "sigma", "n", "extractor") if k not in z.files]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            stats = ReferenceStats(mu=torch.from_numpy(z["mu"]).double(), sigma=torch.from_numpy(z["sigma"]).double(),
                                   n=int(z["n"]), extractor=str(z["extractor"]),
                                   source=str(z["source"]) if "source" in z.files else "",
                                   features=torch.from_numpy(z["features"]).double() if "features" in z.files else None)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a fastdiff reference-statistics file ({err})") from err
    if extractor_id is not None:
        stats.check_extractor(extractor_id, where=f"reference statistics {path}")
    return stats


# ---- metric names and references for an evaluation -------------------------------------------------------------
EXTRACTORS = ("raw", "classifier", "inception")
# data-module keys, not data set options
from fastdiff.schema.sections import LOADER_KEYS  # noqa: E402  (data-module keys, not the data set's options)
_FIXED_METRICS = {"fid": ("frechet", "inception"), "kid": ("kid", "inception"), "raw_fd": ("frechet", "raw"),
                  "raw_kid": ("kid", "raw"), "sliced_w": ("sliced_w", "raw"), "mmd": ("mmd", "raw")}
METRIC_HELP = ("fid, kid (Inception features), fd_<dataset>, kid_<dataset> (classifier features), raw_fd, raw_kid "
               "(raw features), sliced_w, mmd (vector data)")


def parse_metric(name: str, kind: str | None = None, dataset: str | None = None) -> tuple[str, str]:
    """Metric name -> (family, extractor); checks it against the data kind ('image'/'vector') and data set name."""
    if not isinstance(name, str):
        raise ValueError(f"metric names are strings, got {name!r}; allowed: {METRIC_HELP}")
    if name in _FIXED_METRICS:
        family, extractor = _FIXED_METRICS[name]
    elif name.startswith(("fd_", "kid_")) and len(name.split("_", 1)[1]) > 0:
        family, tail = name.split("_", 1)
        family, extractor = ("frechet" if family == "fd" else "kid"), "classifier"
        if dataset is not None and tail != dataset:
            raise ValueError(f"metric {name!r} names data set {tail!r}, but the data set is {dataset!r}; "
                             f"use {name.split('_', 1)[0]}_{dataset}")
    else:
        raise ValueError(f"unknown metric {name!r}; allowed: {METRIC_HELP}")
    if kind is not None and extractor in ("inception", "classifier") and kind != "image":
        raise ValueError(f"metric {name!r} needs image data, this data is {kind!r}; use raw_fd, sliced_w or mmd")
    if kind is not None and family in ("sliced_w", "mmd") and kind != "vector":
        raise ValueError(f"metric {name!r} is for vector data, this data is {kind!r}; use raw_fd or fd_<dataset>")
    return family, extractor


def inception_source(extractor_id: str) -> str:
    """The weights source (``standard`` / ``fid_helper``) behind an Inception extractor id."""
    return "fid_helper" if extractor_id.startswith("inception-v3-fidhelper") else "standard"


class EvalReferences:
    """Feature extractors and their reference statistics for a list of metric names (built on every rank)."""

    def __init__(self, feature_options: dict[str, dict[str, Any]] | None = None,
                 reference: dict[str, str] | None = None, ref_samples: int = 10000) -> None:
        for what, d in (("features", feature_options or {}), ("reference", reference or {})):
            bad = sorted(set(d) - set(EXTRACTORS))
            if bad:
                raise ValueError(f"{what}.{bad[0]}: unknown feature extractor; allowed: {', '.join(EXTRACTORS)}")
        if isinstance(ref_samples, bool) or not isinstance(ref_samples, int) or ref_samples < 2:
            raise ValueError(f"ref_samples: must be an integer >= 2, got {ref_samples!r}")
        self.feature_options = {k: dict(v) for k, v in (feature_options or {}).items()}
        self.reference = dict(reference or {})
        self.ref_samples = ref_samples
        self.extractors: dict[str, Any] = {}
        self.stats: dict[str, ReferenceStats] = {}

    def prepare(self, metric_names: list[str], data: dict[str, Any] | None, data_shape: tuple[int, ...],
                device: torch.device, broadcast: Any = None, write_cache: bool = True) -> None:
        """Build the extractors the metrics need and their reference stats (from files or the data set).

        ``broadcast(obj) -> obj`` (rank 0's object on every rank) makes a trained classifier identical on all ranks.
        """
        from fastdiff.metrics.features import ClassifierFeatures, get_features

        need: dict[str, bool] = {}
        for m in metric_names:
            family, ext = parse_metric(m)
            need[ext] = need.get(ext, False) or family != "frechet"
        spec = {k: v for k, v in (data or {}).items() if k not in LOADER_KEYS}
        name = spec.pop("name", None)
        for ext, keep in need.items():
            opts = self.feature_options.get(ext, {})
            if ext == "inception" and ext in self.reference and "weights" not in opts and "weights_path" not in opts:
                # the reference file names its Inception weights: use the same source (or fail clearly)
                opts = {**opts, "weights": inception_source(load_stats(self.reference[ext]).extractor)}
            if ext == "raw":
                extractor = get_features("raw", data_shape=data_shape, **opts)
            elif ext == "classifier":
                if name is None:
                    raise ValueError("classifier features need the data set: set data: {name: ...}")
                extractor = ClassifierFeatures(dataset=name, data_shape=data_shape, dataset_options=spec,
                                               write_cache=write_cache, **opts)
                if broadcast is not None:
                    extractor.set_weights(broadcast({k: v.cpu() for k, v in extractor.net.state_dict().items()}))
            else:
                extractor = get_features(ext, **opts)
            extractor = extractor.to(device).eval()
            self.extractors[ext] = extractor
            if ext in self.reference:
                stats = load_stats(self.reference[ext], extractor.extractor_id)
                if keep and stats.features is None:
                    raise ValueError(f"reference {self.reference[ext]} holds no feature rows, which kid/sliced_w/mmd "
                                     "need; recompute it with python -m fastdiff.cli.stats --keep-features N")
            else:
                if name is None:
                    raise ValueError(f"reference statistics for {ext!r} features need the data set "
                                     f"(data: {{name: ...}}) or a file (reference: {{{ext}: FILE.npz}})")
                x = load_data_tensor(name, max_items=self.ref_samples, **spec)
                stats = compute_stats(extractor, x, keep_features=self.ref_samples if keep else 0, device=device,
                                      source=f"{name} {spec}")
            self.stats[ext] = stats

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Features of samples ``x`` under every prepared extractor."""
        return {name: ext(x) for name, ext in self.extractors.items()}

    def build_metrics(self, metric_names: list[str], device: torch.device) -> dict[str, Any]:
        """One torchmetrics Metric per name, bound to its reference."""
        from fastdiff.metrics.fid import FrechetDistance, KernelDistance
        from fastdiff.metrics.toy import MMD, SlicedWasserstein

        out = {}
        for m in metric_names:
            family, ext = parse_metric(m)
            st = self.stats[ext]
            if family == "frechet":
                metric = FrechetDistance(st.mu, st.sigma)
            else:
                cls = {"kid": KernelDistance, "sliced_w": SlicedWasserstein, "mmd": MMD}[family]
                metric = cls(st.features)
            out[m] = metric.to(device)
        return out
