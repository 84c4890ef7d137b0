"""MetricSet: named distribution metrics over feature extractors and their reference statistics — the part of an
evaluation shared by the Evaluator (samples it draws) and sample.py's FID (samples as written to disk)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from fastdiff.metrics.stats import EvalReferences, parse_metric


class MetricSet:
    """``update(x, seeds)`` with samples in data space; ``compute()`` gives every metric's value. Metric states
    are torchmetrics Metrics, synchronised across ranks in ``compute`` (every rank must call it)."""

    def __init__(self, metric_names: Sequence[str], kind: str | None = None,
                 features: dict[str, dict[str, Any]] | None = None, reference: dict[str, str] | None = None,
                 ref_samples: int = 10000) -> None:
        self.names = list(metric_names)
        self.kind = kind
        self._extractor_of = {m: parse_metric(m, kind)[1] for m in self.names}
        self.refs = EvalReferences(features, reference, ref_samples)
        self.metrics: dict[str, Any] = {}

    @property
    def prepared(self) -> bool:
        return bool(self.metrics) or not self.names

    def prepare(self, data: dict[str, Any] | None, data_shape: tuple[int, ...], device: torch.device,
                broadcast: Callable[[Any], Any] | None = None, write_cache: bool = True) -> None:
        """Build the extractors and reference statistics (files or the data set ``data``) and the metrics."""
        self.refs.prepare(self.names, data, data_shape, device, broadcast=broadcast, write_cache=write_cache)
        self.metrics = self.refs.build_metrics(self.names, device)

    def extractor(self, metric: str) -> Any:
        return self.refs.extractors[self._extractor_of[metric]]

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def update(self, x: Tensor, seeds: Sequence[int] | None = None) -> None:
        """Add samples ``x`` (data space, [-1, 1] for images) with their seeds (KID / sample-set metrics sort by
        them; Fréchet sums ignore them)."""
        if not x.shape[0]:
            return
        with torch.no_grad():
            feats = self.refs.features(x)
            for name, metric in self.metrics.items():
                metric.update(feats[self._extractor_of[name]], seeds)

    def compute_one(self, name: str) -> float:
        """One metric's value (may raise, e.g. ValueError with fewer than 2 samples)."""
        return float(self.metrics[name].compute())
