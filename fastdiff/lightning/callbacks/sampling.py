"""SamplingEvaluation: during training, sample with several samplers x NFE budgets and track distribution metrics.

Every evaluation runs on every rank: rank r samples its share of the fixed seeds (``fastdiff.seeds.rank_batches``,
the rule of sample.py) with the EMA weights (the trainer's EMA callback, if any) in eval/no-grad mode; metric states
are torchmetrics Metrics synchronised across ranks (sums, or seed-sorted gathers of padded tensors). Only after
every collective does rank 0 log. Tags (``name`` defaults to "val"):

- ``<name>/<metric>/<label>/nfe<N>``: N is the requested budget (the sampler runs the largest step count whose NFE
  fits); ``<name>/nfe/<label>/nfe<N>`` the measured NFE per sample; ``<name>/samples_per_s/<label>/nfe<N>``.
- adaptive samplers (``cls.adaptive``) take a list of option dicts (tolerances) instead of budgets; their tag names
  the options, e.g. ``val/fd_digits/ggf/eps_rel=0.05`` (stable across evaluations, unlike the measured NFE, which
  is logged under ``val/nfe/ggf/eps_rel=0.05`` and used as the x-coordinate of the metric-vs-NFE figure).
- images: ``<name>/samples/<label>/<budget>`` (an image grid, or a scatter plot for 2-D data, from rank 0's share);
  ``<name>/metrics_vs_nfe``: one panel per metric, one line per sampler.

A sampler that raises or produces NaN/inf (``SamplingNaNError`` names the seeds) is reported in a warning with its
label, budget and seeds (gathered from all ranks); its metrics are logged as NaN and training goes on.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Sequence

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torchmetrics.utilities.distributed import gather_all_tensors

from fastdiff.metrics.stats import LOADER_KEYS, EvalReferences, parse_metric
from fastdiff.registry import SAMPLERS
from fastdiff.samplers import SamplingNaNError, get_sampler
from fastdiff.seeds import parse_seeds, rank_batches

__all__ = ["SamplingEvaluation", "build_evaluation_callbacks", "build_runs", "validate_evaluation", "image_grid"]


EVAL_KEYS: dict[str, Any] = {
    "name": str, "samplers": list, "n_samples": int, "seeds": (int, str, list), "batch_size": int,
    "every_n_steps": int, "every_n_epochs": int, "metrics": list, "ema": bool, "log_images": bool, "n_images": int,
    "features": dict, "reference": dict, "ref_samples": int, "data": dict, "progress": bool}
SAMPLER_KEYS = ("sampler", "nfe", "options", "label")


@dataclass
class EvalRun:
    """One sampler at one budget: ``budget`` is "nfe<N>" or, for adaptive samplers, "k=v,..." of its options."""

    label: str
    budget: str
    sampler: Any


def build_runs(entries: Sequence[dict[str, Any]], where: str = "samplers") -> list[EvalRun]:
    """Sampler x budget runs from ``[{sampler, nfe | options list, options, label}]`` (adaptive: option dicts)."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"{where}: samplers must be a non-empty list of "
                         "{sampler: NAME, nfe: [N, ...], options: {...}}")
    runs: list[EvalRun] = []
    for j, e in enumerate(entries):
        w = f"{where}[{j}]"
        if not isinstance(e, dict) or "sampler" not in e:
            raise ValueError(f"{w}: expected a mapping with a 'sampler' key, got {e!r}")
        bad = sorted(set(e) - set(SAMPLER_KEYS))
        if bad:
            raise ValueError(f"{w}.{bad[0]}: unknown key; allowed: {', '.join(SAMPLER_KEYS)}")
        name, opts = e["sampler"], e.get("options") or {}
        try:
            cls = SAMPLERS.get(name)
        except KeyError as err:
            raise ValueError(f"{w}: {err}") from None
        label = e.get("label", name)
        if not isinstance(label, str) or not label or "/" in label:
            raise ValueError(f"{w}.label: must be a non-empty string without '/', got {label!r}")
        try:
            if cls.adaptive:
                if "nfe" in e:
                    raise ValueError(f"sampler {name!r} is adaptive: give tolerances as a list of option dicts in "
                                     "options (e.g. [{eps_rel: 0.05}, {eps_rel: 0.1}]), not nfe")
                for o in (opts if isinstance(opts, list) else [opts]):
                    if not isinstance(o, dict):
                        raise ValueError(f"options entries must be mappings, got {o!r}")
                    budget = ",".join(f"{k}={v}" for k, v in sorted(o.items())) or "default"
                    runs.append(EvalRun(label, budget, get_sampler(name, **o)))
            else:
                nfe = e.get("nfe")
                nfes = nfe if isinstance(nfe, list) else [nfe]
                if nfe is None or not nfes or any(isinstance(n, bool) or not isinstance(n, int) for n in nfes):
                    raise ValueError(f"nfe: required, an integer or a list of integers; got {nfe!r}")
                if not isinstance(opts, dict):
                    raise ValueError("options: a list of option dicts is for adaptive samplers; use one entry per "
                                     "option set (with distinct labels)")
                runs.extend(EvalRun(label, f"nfe{n}", get_sampler(name, nfe=n, **opts)) for n in nfes)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{w}: {err}") from None
    seen: set[tuple[str, str]] = set()
    for r in runs:
        if (r.label, r.budget) in seen:
            raise ValueError(f"{where}: {r.label!r} at {r.budget} appears twice; give the entries distinct labels")
        seen.add((r.label, r.budget))
    return runs


@dataclass
class RunResult:
    """What one sampler x budget produced in one evaluation (identical on every rank)."""

    label: str
    budget: str
    values: dict[str, float]
    nfe: float
    samples_per_s: float  # samples / sampler seconds (slowest rank; feature extraction not included)
    samples: Tensor | None = None  # rank 0's first samples, for images


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    if _dist_on():
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def _gather_ints(values: Sequence[int], device: torch.device) -> list[int]:
    """Every rank's list, concatenated in rank order (torchmetrics gathers sizes, pads, trims)."""
    local = torch.tensor(list(values), dtype=torch.int64, device=device)
    parts = gather_all_tensors(local) if _dist_on() else [local]
    return [v for p in parts for v in p.tolist()]


def image_grid(x: Tensor, upscale: int = 1, pad: int = 1) -> Tensor:
    """Images [N, C, H, W] in [-1, 1] -> one uint8 RGB grid [H', W', 3] (white padding)."""
    n, c, h, w = x.shape
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    img = ((x.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    img = img.expand(-1, 3, -1, -1) if c == 1 else img[:, :3]
    img = img.repeat_interleave(upscale, 2).repeat_interleave(upscale, 3)
    h, w = h * upscale, w * upscale
    grid = torch.full((3, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img[i]
    return grid.permute(1, 2, 0)


class SamplingEvaluation(Callback):
    """Sample with several samplers x budgets every ``every_n_steps`` (or epochs) and log metrics; see module doc."""

    def __init__(self, samplers: Sequence[dict[str, Any]], data_shape: Sequence[int], kind: str = "image",
                 n_samples: int = 128, seeds: int | str | Sequence[int] = 0, batch_size: int = 128,
                 every_n_steps: int | None = None, every_n_epochs: int | None = None,
                 metrics: Sequence[str] = (), name: str = "val", ema: bool = True, log_images: bool = True,
                 n_images: int = 64, features: dict[str, dict[str, Any]] | None = None,
                 reference: dict[str, str] | None = None, ref_samples: int = 10000,
                 data: dict[str, Any] | None = None, progress: bool = True) -> None:
        super().__init__()
        if (every_n_steps is None) == (every_n_epochs is None):
            raise ValueError("give exactly one of every_n_steps or every_n_epochs")
        for key, val in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs),
                         ("n_samples", n_samples), ("batch_size", batch_size)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
                raise ValueError(f"{key}: must be a positive integer, got {val!r}")
        self.seeds = list(range(seeds, seeds + n_samples)) if isinstance(seeds, int) else parse_seeds(seeds)
        if not isinstance(seeds, int) and len(self.seeds) != n_samples:
            raise ValueError(f"seeds: {seeds!r} give {len(self.seeds)} seeds but n_samples is {n_samples}; make "
                             "them agree (or give a start seed)")
        if kind not in ("image", "vector"):
            raise ValueError(f"kind must be 'image' or 'vector', got {kind!r}")
        self.data_shape, self.kind, self.name = tuple(int(s) for s in data_shape), kind, name
        self.batch_size, self.every_n_steps, self.every_n_epochs = batch_size, every_n_steps, every_n_epochs
        self.use_ema, self.log_images, self.n_images, self.progress = ema, log_images, n_images, progress
        self.data = dict(data) if data else None
        self.metric_names = list(metrics)
        for m in self.metric_names:
            try:
                parse_metric(m, kind, (self.data or {}).get("name"))
            except ValueError as err:
                raise ValueError(f"metrics: {err}") from None
        self.runs = build_runs(samplers, where="samplers")
        self.refs = EvalReferences(features, reference, ref_samples)
        self.metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self._last_step = -1
        self._warned_no_ema = False

    # ---- setup -----------------------------------------------------------------------------------------------
    def _data_spec(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any] | None:
        if self.data:
            return self.data
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "dataset_options") and hasattr(dm, "name"):
            return {"name": dm.name, **dm.dataset_options}
        cfg = getattr(pl_module, "config", None)
        return dict(cfg["data"]) if isinstance(cfg, dict) and cfg.get("data") else None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check samplers against the process; build extractors, reference statistics and metrics (every rank)."""
        process = self._score_model(pl_module).process
        for run in self.runs:
            run.sampler.check_process(process)
        shape = getattr(pl_module, "data_shape", None)
        if shape is not None and tuple(shape) != self.data_shape:
            raise ValueError(f"evaluation {self.name!r}: data_shape {self.data_shape} != the module's {tuple(shape)}")
        data = self._data_spec(trainer, pl_module)
        for m in self.metric_names:  # now that the data set is known, fd_<name> must name it
            parse_metric(m, self.kind, data["name"] if data else None)
        broadcast = trainer.strategy.broadcast if trainer.world_size > 1 else None
        self.refs.prepare(self.metric_names, data, self.data_shape, pl_module.device, broadcast=broadcast,
                          write_cache=trainer.is_global_zero)
        self.metrics = self.refs.build_metrics(self.metric_names, pl_module.device)

    @staticmethod
    def _score_model(pl_module: LightningModule) -> Any:
        return getattr(pl_module, "model", pl_module)

    # ---- triggers --------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module)

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _weights(self, trainer: Trainer, pl_module: LightningModule) -> ContextManager[Any]:
        if not self.use_ema:
            return nullcontext()
        ema = next((cb for cb in trainer.callbacks if callable(getattr(cb, "averaged", None))), None)
        if ema is None or not getattr(ema, "shadow", True):
            if not self._warned_no_ema and trainer.is_global_zero:
                warnings.warn(f"evaluation {self.name!r}: ema=true but no EMA weights are available; using the raw "
                              "weights", stacklevel=2)
            self._warned_no_ema = True
            return nullcontext()
        return ema.averaged(pl_module)

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> list[RunResult]:
        """One evaluation on every rank; returns the (rank-identical) results and logs them from rank 0."""
        if not self.metrics and self.metric_names:
            self.on_fit_start(trainer, pl_module)
        batches = [b for b in rank_batches(self.seeds, self.batch_size, trainer.world_size, trainer.global_rank) if b]
        bar = None
        if self.progress and trainer.is_global_zero:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.runs) * len(batches), desc=f"{self.name} @ step {trainer.global_step}",
                       leave=False, dynamic_ncols=True)
        was_training = pl_module.training
        pl_module.eval()
        results = []
        try:
            with self._weights(trainer, pl_module), torch.no_grad():
                for run in self.runs:
                    results.append(self._evaluate_run(run, batches, trainer, pl_module, bar))
        finally:
            pl_module.train(was_training)
            if bar is not None:
                bar.close()
        values = {}
        for r in results:
            for metric, v in r.values.items():
                values[f"{self.name}/{metric}/{r.label}/{r.budget}"] = v
            values[f"{self.name}/nfe/{r.label}/{r.budget}"] = r.nfe
            values[f"{self.name}/samples_per_s/{r.label}/{r.budget}"] = r.samples_per_s
        for tag, v in values.items():
            trainer.callback_metrics[tag] = torch.tensor(v)
        self.history.append({"step": trainer.global_step, "values": values})
        if trainer.is_global_zero:  # every collective is done: rank 0 alone may log now
            try:
                self._log(trainer, values, results)
            except Exception as err:  # noqa: BLE001 - a plotting problem must not stop training
                warnings.warn(f"evaluation {self.name!r}: logging failed: {type(err).__name__}: {err}", stacklevel=2)
        return results

    def _evaluate_run(self, run: Any, batches: list[list[int]], trainer: Trainer, pl_module: LightningModule,
                      bar: Any) -> RunResult:
        model, device = self._score_model(pl_module), pl_module.device
        for metric in self.metrics.values():
            metric.reset()
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
                feats = self.refs.features(out.x.to(device))
                for mname, metric in self.metrics.items():
                    metric.update(feats[parse_metric(mname, self.kind)[1]], b)
            except SamplingNaNError as err:
                failed, error = list(err.seeds), str(err)
                break
            except Exception as err:  # noqa: BLE001 - a failing sampler must not kill training
                failed, error = list(b), f"{type(err).__name__}: {err}"
                break
            count += len(b)
            nfe_sum += float(out.nfe_per_sample.double().sum())
            if trainer.is_global_zero and sum(k.shape[0] for k in keep) < self.n_images:
                keep.append(out.x.detach().cpu())
            if bar is not None:
                bar.set_postfix_str(f"{run.label} {run.budget}", refresh=False)
                bar.update(1)
        totals = _all_reduce(torch.tensor([float(bool(error)), count, nfe_sum], dtype=torch.float64, device=device))
        slowest = float(_all_reduce(torch.tensor([elapsed], dtype=torch.float64, device=device), op="max"))
        if error:
            warnings.warn(f"[rank {trainer.global_rank}] evaluation {self.name!r}: sampler {run.label!r} "
                          f"({run.budget}) failed: {error}", stacklevel=2)
        if totals[0] > 0:  # every rank knows: skip the metric collectives together
            all_failed = sorted(_gather_ints(failed, device))
            shown = ", ".join(map(str, all_failed[:20])) + (" ..." if len(all_failed) > 20 else "")
            if trainer.is_global_zero:
                warnings.warn(f"evaluation {self.name!r} at step {trainer.global_step}: sampler {run.label!r} "
                              f"({run.budget}) failed for seeds [{shown}]; its metrics are logged as NaN",
                              stacklevel=2)
            self.failures.append({"step": trainer.global_step, "label": run.label, "budget": run.budget,
                                  "seeds": all_failed, "error": error})
            values = {m: float("nan") for m in self.metrics}
        else:
            values = {}
            for mname, metric in self.metrics.items():
                try:
                    values[mname] = float(metric.compute())
                except Exception as err:  # noqa: BLE001 - same data on every rank: all fail alike
                    if trainer.is_global_zero:
                        warnings.warn(f"evaluation {self.name!r}: metric {mname} for {run.label!r} ({run.budget}) "
                                      f"failed: {err}", stacklevel=2)
                    values[mname] = float("nan")
        n = float(totals[1])
        samples = torch.cat(keep)[: self.n_images] if keep else None
        return RunResult(run.label, run.budget, values, nfe=float(totals[2]) / n if n else float("nan"),
                         samples_per_s=n / slowest if slowest > 0 else float("nan"), samples=samples)

    # ---- logging (rank 0, after all collectives) -------------------------------------------------------------
    def _log(self, trainer: Trainer, values: dict[str, float], results: list[RunResult]) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)
        experiments = [lg.experiment for lg in trainer.loggers
                       if hasattr(getattr(lg, "experiment", None), "add_figure")]
        if not experiments:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for r in results:
            if not self.log_images or r.samples is None:
                continue
            tag = f"{self.name}/samples/{r.label}/{r.budget}"
            if r.samples.ndim == 4:
                grid = image_grid(r.samples, upscale=max(1, 32 // max(r.samples.shape[-2:])))
                for exp in experiments:
                    exp.add_image(tag, grid.numpy(), step, dataformats="HWC")
            elif r.samples.ndim == 2 and r.samples.shape[1] == 2:
                fig, ax = plt.subplots(figsize=(4, 4))
                ax.scatter(r.samples[:, 0].numpy(), r.samples[:, 1].numpy(), s=3, alpha=0.6)
                ax.set_aspect("equal")
                ax.set_title(f"{r.label} {r.budget} (nfe {r.nfe:.1f})", fontsize=9)
                self._add_figure(experiments, tag, fig, step, plt)
        if self.metric_names:
            self._add_figure(experiments, f"{self.name}/metrics_vs_nfe", self._metric_figure(results, plt), step, plt)

    @staticmethod
    def _add_figure(experiments: list[Any], tag: str, fig: Any, step: int, plt: Any) -> None:
        for exp in experiments:
            exp.add_figure(tag, fig, step, close=False)
        plt.close(fig)

    def _metric_figure(self, results: list[RunResult], plt: Any) -> Any:
        """One panel per metric: metric vs measured NFE, one line per sampler label."""
        k = len(self.metric_names)
        fig, axes = plt.subplots(1, k, figsize=(4.5 * k, 3.5), squeeze=False)
        labels = list(dict.fromkeys(r.label for r in results))
        for ax, metric in zip(axes[0], self.metric_names):
            for label in labels:
                pts = sorted((r.nfe, r.values[metric]) for r in results if r.label == label)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            ax.set_xscale("log")
            ax.set_xlabel("NFE per sample")
            ax.set_title(metric)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        return fig


def validate_evaluation(cfg_list: Sequence[dict[str, Any]], data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Check keys and types of the ``evaluation`` list; fill name ("val") and data (the config's data section)."""
    from fastdiff.config import ConfigError

    if not isinstance(cfg_list, (list, tuple)):
        raise ConfigError(f"evaluation: expected a list of evaluation blocks, got {cfg_list!r}")
    out, names = [], set()
    for i, cfg in enumerate(cfg_list):
        if not isinstance(cfg, dict):
            raise ConfigError(f"evaluation[{i}]: expected a mapping, got {cfg!r}")
        for key, val in cfg.items():
            if key not in EVAL_KEYS:
                raise ConfigError(f"evaluation[{i}].{key}: unknown key; allowed: {', '.join(EVAL_KEYS)}")
            types = EVAL_KEYS[key] if isinstance(EVAL_KEYS[key], tuple) else (EVAL_KEYS[key],)
            if val is not None and (not isinstance(val, types) or (isinstance(val, bool) and bool not in types)):
                raise ConfigError(f"evaluation[{i}].{key}: expected {' or '.join(t.__name__ for t in types)}, "
                                  f"got {val!r}")
        if "samplers" not in cfg:
            raise ConfigError(f"evaluation[{i}].samplers: required (a list of {{sampler, nfe, options}})")
        cfg = {k: v for k, v in cfg.items() if v is not None}
        cfg.setdefault("name", "val")
        if cfg["name"] in names:
            raise ConfigError(f"evaluation[{i}].name: {cfg['name']!r} is used twice; give each evaluation a "
                              "distinct name")
        names.add(cfg["name"])
        if cfg.get("data") is None and data:
            cfg["data"] = {k: v for k, v in data.items() if k not in LOADER_KEYS}
        out.append(cfg)
    return out


def build_evaluation_callbacks(cfg_list: Sequence[dict[str, Any]], data_shape: Sequence[int], kind: str,
                               data: dict[str, Any] | None = None) -> list[SamplingEvaluation]:
    """SamplingEvaluation callbacks from the config's ``evaluation`` list (unknown keys are errors naming the key).

    ``data``: the config's data section (the reference data set; defaults to the trainer's data module).
    """
    out = []
    for i, cfg in enumerate(validate_evaluation(cfg_list, data)):
        try:
            out.append(SamplingEvaluation(data_shape=data_shape, kind=kind, **cfg))
        except (ValueError, TypeError) as err:
            from fastdiff.config import ConfigError

            sep = "." if str(err).split(":")[0].split("[")[0].split(".")[0] in EVAL_KEYS else ": "
            raise ConfigError(f"evaluation[{i}]{sep}{err}") from err
    return out
