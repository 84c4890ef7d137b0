"""Evaluator: samplers x budgets x metrics over a score model and a fixed seed set, without Lightning.

Rank r of a world of W samples its share of the seeds (``fastdiff.seeds.rank_batches``, the rule of sample.py);
metric states are torchmetrics Metrics synchronised across ranks (sums, or seed-sorted gathers), so every rank gets
the same values, equal to those of one process. A sampler that raises or produces NaN/inf (``SamplingNaNError``
names the seeds) is reported with its label, budget and seeds gathered from all ranks; its metrics are NaN.

Used by the training callback (``fastdiff.lightning.callbacks.sampling``) and usable directly, e.g.::

    ev = Evaluator([{"sampler": "edm_heun", "nfe": [9, 19]}], data_shape=(1, 8, 8), metrics=["fd_digits"],
                   data={"name": "digits"})
    ev.prepare(model.process, torch.device("cpu"))
    results = ev.evaluate(model, torch.device("cpu"))
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from fastdiff.evaluation.metric_set import MetricSet
from fastdiff.evaluation.runs import EvalRun, build_runs
from fastdiff.metrics.stats import parse_metric
from fastdiff.samplers import SamplingNaNError
from fastdiff.seeds import parse_seeds, rank_batches
from fastdiff.utils.distributed import all_reduce, gather_ints


@dataclass
class RunResult:
    """What one sampler x budget produced in one evaluation (identical on every rank)."""

    label: str
    budget: str
    values: dict[str, float]
    nfe: float
    samples_per_s: float  # samples / sampler seconds (slowest rank; feature extraction not included)
    samples: Tensor | None = None  # rank 0's first samples, for images


def _positive_int(key: str, val: Any) -> None:
    if isinstance(val, bool) or not isinstance(val, int) or val < 1:
        raise ValueError(f"{key}: must be a positive integer, got {val!r}")


class Evaluator:
    """Sample the seed set with every run (sampler x budget) and compute every metric against its reference."""

    def __init__(self, samplers: Sequence[dict[str, Any]], data_shape: Sequence[int], kind: str = "image",
                 n_samples: int = 128, seeds: int | str | Sequence[int] = 0, batch_size: int = 128,
                 metrics: Sequence[str] = (), name: str = "val", n_images: int = 64,
                 features: dict[str, dict[str, Any]] | None = None, reference: dict[str, str] | None = None,
                 ref_samples: int = 10000, data: dict[str, Any] | None = None) -> None:
        _positive_int("n_samples", n_samples)
        _positive_int("batch_size", batch_size)
        self.seeds = list(range(seeds, seeds + n_samples)) if isinstance(seeds, int) else parse_seeds(seeds)
        if not isinstance(seeds, int) and len(self.seeds) != n_samples:
            raise ValueError(f"seeds: {seeds!r} give {len(self.seeds)} seeds but n_samples is {n_samples}; make "
                             "them agree (or give a start seed)")
        if kind not in ("image", "vector"):
            raise ValueError(f"kind must be 'image' or 'vector', got {kind!r}")
        self.data_shape, self.kind, self.name = tuple(int(s) for s in data_shape), kind, name
        self.batch_size, self.n_images = batch_size, n_images
        self.data = dict(data) if data else None
        self.metric_names = list(metrics)
        for m in self.metric_names:
            try:
                parse_metric(m, kind, (self.data or {}).get("name"))
            except ValueError as err:
                raise ValueError(f"metrics: {err}") from None
        self.runs: list[EvalRun] = build_runs(samplers, where="samplers")
        self.metric_set = MetricSet(self.metric_names, kind, features, reference, ref_samples)
        self.failures: list[dict[str, Any]] = []

    @property
    def prepared(self) -> bool:
        return self.metric_set.prepared

    @property
    def metrics(self) -> dict[str, Any]:
        """metric name -> torchmetrics Metric (after :meth:`prepare`)."""
        return self.metric_set.metrics

    def prepare(self, process: Any, device: torch.device, data: dict[str, Any] | None = None,
                broadcast: Callable[[Any], Any] | None = None, write_cache: bool = True) -> None:
        """Check the samplers against ``process``; build extractors, reference statistics and metrics (every rank).

        ``data``: the data set spec (``{name, **options}``) when the constructor got none; ``broadcast(obj)``
        returns rank 0's object on every rank (a trained classifier must be identical everywhere).
        """
        for run in self.runs:
            run.sampler.check_process(process)
        data = self.data or data
        for m in self.metric_names:  # now that the data set is known, fd_<name> must name it
            parse_metric(m, self.kind, data["name"] if data else None)
        self.metric_set.prepare(data, self.data_shape, device, broadcast=broadcast, write_cache=write_cache)

    def evaluate(self, model: Any, device: torch.device, rank: int = 0, world_size: int = 1, step: int | None = None,
                 progress: Any = None) -> list[RunResult]:
        """Every run on this rank's seeds (all ranks call it together); ``model(x, t)`` is the score with a
        ``.process``. ``progress``: an object with ``update(n)`` and ``set_postfix_str(s)`` (e.g. a tqdm bar)."""
        batches = [b for b in rank_batches(self.seeds, self.batch_size, world_size, rank) if b]
        was_training = getattr(model, "training", False)
        if was_training:
            model.eval()  # dropout off while sampling
        try:
            with torch.no_grad():
                return [self._run(run, model, device, batches, rank, step, progress) for run in self.runs]
        finally:
            if was_training:
                model.train()

    def n_batches(self, rank: int = 0, world_size: int = 1) -> int:
        """Sampler calls of one evaluation on ``rank`` (for a progress bar's total)."""
        return len(self.runs) * sum(1 for b in rank_batches(self.seeds, self.batch_size, world_size, rank) if b)

    def tags(self, results: Sequence[RunResult]) -> dict[str, float]:
        """``<name>/<metric>/<label>/<budget>``, ``<name>/nfe/...`` and ``<name>/samples_per_s/...`` -> value."""
        values = {}
        for r in results:
            for metric, v in r.values.items():
                values[f"{self.name}/{metric}/{r.label}/{r.budget}"] = v
            values[f"{self.name}/nfe/{r.label}/{r.budget}"] = r.nfe
            values[f"{self.name}/samples_per_s/{r.label}/{r.budget}"] = r.samples_per_s
        return values

    def _sample_batches(self, run: EvalRun, model: Any, device: torch.device, batches: list[list[int]],
                        keep_images: bool, progress: Any) -> tuple[list[Tensor], list[int], str, int, float, float]:
        """(kept samples, failed seeds, error, samples done, NFE sum, sampler seconds); stops at the first failure."""
        keep: list[Tensor] = []
        failed: list[int] = []
        error, count, nfe_sum, elapsed = "", 0, 0.0, 0.0
        for b in batches:
            try:
                start = time.perf_counter()
                out = run.sampler.sample(model, model.process, (len(b), *self.data_shape), seeds=b, device=device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed += time.perf_counter() - start
                self.metric_set.update(out.x.to(device), b)
            except SamplingNaNError as err:
                failed, error = list(err.seeds), str(err)
                break
            except Exception as err:  # noqa: BLE001 - a failing sampler must not kill training
                failed, error = list(b), f"{type(err).__name__}: {err}"
                break
            count += len(b)
            nfe_sum += float(out.nfe_per_sample.double().sum())
            if keep_images and sum(k.shape[0] for k in keep) < self.n_images:
                keep.append(out.x.detach().cpu())
            if progress is not None:
                progress.set_postfix_str(f"{run.label} {run.budget}", refresh=False)
                progress.update(1)
        return keep, failed, error, count, nfe_sum, elapsed

    def _run(self, run: EvalRun, model: Any, device: torch.device, batches: list[list[int]], rank: int,
             step: int | None, progress: Any) -> RunResult:
        self.metric_set.reset()
        keep, failed, error, count, nfe_sum, elapsed = self._sample_batches(run, model, device, batches, rank == 0,
                                                                            progress)
        totals = all_reduce(torch.tensor([float(bool(error)), count, nfe_sum], dtype=torch.float64, device=device))
        slowest = float(all_reduce(torch.tensor([elapsed], dtype=torch.float64, device=device), op="max"))
        at = f" at step {step}" if step is not None else ""
        if error:
            warnings.warn(f"[rank {rank}] evaluation {self.name!r}: sampler {run.label!r} ({run.budget}) failed: "
                          f"{error}", stacklevel=3)
        if totals[0] > 0:  # every rank knows: skip the metric collectives together
            all_failed = sorted(gather_ints(failed, device))
            shown = ", ".join(map(str, all_failed[:20])) + (" ..." if len(all_failed) > 20 else "")
            if rank == 0:
                warnings.warn(f"evaluation {self.name!r}{at}: sampler {run.label!r} ({run.budget}) failed for seeds "
                              f"[{shown}]; its metrics are logged as NaN", stacklevel=3)
            self.failures.append({"step": step, "label": run.label, "budget": run.budget, "seeds": all_failed,
                                  "error": error})
            values = {m: float("nan") for m in self.metrics}
        else:
            values = {}
            for mname in self.metrics:
                try:
                    values[mname] = self.metric_set.compute_one(mname)
                except Exception as err:  # noqa: BLE001 - same data on every rank: all fail alike
                    if rank == 0:
                        warnings.warn(f"evaluation {self.name!r}: metric {mname} for {run.label!r} ({run.budget}) "
                                      f"failed: {err}", stacklevel=3)
                    values[mname] = float("nan")
        n = float(totals[1])
        samples = torch.cat(keep)[: self.n_images] if keep else None
        return RunResult(run.label, run.budget, values, nfe=float(totals[2]) / n if n else float("nan"),
                         samples_per_s=n / slowest if slowest > 0 else float("nan"), samples=samples)
