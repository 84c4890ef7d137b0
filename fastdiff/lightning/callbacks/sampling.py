"""SamplingEvaluation: during training, run a :class:`fastdiff.evaluation.Evaluator` (samplers x NFE budgets x
distribution metrics) and log the results. The callback only triggers, swaps in the EMA weights and logs.

Every evaluation runs on every rank with the EMA weights (the trainer's EMA callback, found with ``find_ema``
wherever it is listed; its update for the current step is applied first) in eval/no-grad mode. Only after every
collective does rank 0 log. Tags (``name`` defaults to "val"):

- ``<name>/<metric>/<label>/nfe<N>``: N is the requested budget (the sampler runs the largest step count whose NFE
  fits); ``<name>/nfe/<label>/nfe<N>`` the measured NFE per sample; ``<name>/samples_per_s/<label>/nfe<N>``.
- adaptive samplers (``cls.adaptive``) take a list of option dicts (tolerances) instead of budgets; their tag names
  the options, e.g. ``val/fd_digits/ggf/eps_rel=0.05`` (stable across evaluations, unlike the measured NFE, which
  is logged under ``val/nfe/ggf/eps_rel=0.05`` and used as the x-coordinate of the metric-vs-NFE figure).
- images: ``<name>/samples/<label>/<budget>`` (an image grid, or a scatter plot for 2-D data, from rank 0's share);
  ``<name>/metrics_vs_nfe``: one panel per metric, one line per sampler (log or symlog y axis).
- a TensorBoard custom-scalars layout (CUSTOM SCALARS tab): per evaluation, one chart per metric with one line per
  sampler@budget.

A sampler that raises or produces NaN/inf is reported in a warning with its label, budget and seeds; its metrics
are logged as NaN and training goes on.
"""
from __future__ import annotations

import sys
import time
import warnings
from contextlib import nullcontext
from typing import Any, ContextManager, Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from fastdiff.evaluation import SAMPLER_KEYS, EvalRun, Evaluator, RunResult, build_runs
from fastdiff.evaluation.plots import custom_scalars_layout, metric_figure, pyplot, scatter_figure
from fastdiff.lightning.callbacks.ema import find_ema
from fastdiff.utils.images import image_grid

__all__ = ["SamplingEvaluation", "build_evaluation_callbacks", "build_runs", "validate_evaluation", "image_grid",
           "EvalRun", "RunResult", "EVAL_KEYS", "SAMPLER_KEYS"]

# the evaluation section's schema lives in the one schema layer (checked there at config load, again here for
# callers that build callbacks directly)
from fastdiff.schema.evaluation import EVAL_KEYS, validate_evaluation  # noqa: E402,F401


class SamplingEvaluation(Callback):
    """Run an :class:`Evaluator` every ``every_n_steps`` (or epochs) and log its metrics; see the module doc."""

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
        for key, val in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
                raise ValueError(f"{key}: must be a positive integer, got {val!r}")
        self.evaluator = Evaluator(samplers, data_shape, kind=kind, n_samples=n_samples, seeds=seeds,
                                   batch_size=batch_size, metrics=metrics, name=name, n_images=n_images,
                                   features=features, reference=reference, ref_samples=ref_samples, data=data)
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.use_ema, self.log_images, self.progress = ema, log_images, progress
        self.history: list[dict[str, Any]] = []
        self._last_step = -1
        self._warned_no_ema = False

    # the evaluator's settings, read (and in tests replaced) through the callback
    name = property(lambda self: self.evaluator.name)
    runs = property(lambda self: self.evaluator.runs)
    seeds = property(lambda self: self.evaluator.seeds)
    metric_names = property(lambda self: self.evaluator.metric_names)
    failures = property(lambda self: self.evaluator.failures)
    data_shape = property(lambda self: self.evaluator.data_shape)

    # ---- setup -----------------------------------------------------------------------------------------------
    @staticmethod
    def _data_spec(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any] | None:
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "dataset_options") and hasattr(dm, "name"):
            return {"name": dm.name, **dm.dataset_options}
        cfg = getattr(pl_module, "config", None)
        return dict(cfg["data"]) if isinstance(cfg, dict) and cfg.get("data") else None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check samplers and shapes; build extractors, reference statistics and metrics (every rank)."""
        shape = getattr(pl_module, "data_shape", None)
        if shape is not None and tuple(shape) != self.data_shape:
            raise ValueError(f"evaluation {self.name!r}: data_shape {self.data_shape} != the module's {tuple(shape)}")
        broadcast = trainer.strategy.broadcast if trainer.world_size > 1 else None
        self.evaluator.prepare(self._score_model(pl_module).process, pl_module.device,
                               data=self._data_spec(trainer, pl_module), broadcast=broadcast,
                               write_cache=trainer.is_global_zero)
        if trainer.is_global_zero:
            self._write_layout(trainer)

    @staticmethod
    def _score_model(pl_module: LightningModule) -> Any:
        return getattr(pl_module, "model", pl_module)

    def _write_layout(self, trainer: Trainer) -> None:
        """The first evaluation callback writes one custom-scalars layout for all of them (TensorBoard reads only
        the first layout event of a run)."""
        evaluations = [cb for cb in trainer.callbacks if isinstance(cb, SamplingEvaluation)]
        if not evaluations or evaluations[0] is not self:
            return
        layout: dict[str, Any] = {}
        for cb in evaluations:
            layout.update(custom_scalars_layout(cb.name, cb.metric_names))
        for lg in trainer.loggers:
            exp = getattr(lg, "experiment", None)
            if hasattr(exp, "add_custom_scalars"):
                exp.add_custom_scalars(layout)

    # ---- triggers --------------------------------------------------------------------------------------------
    def _catch_up_ema(self, trainer: Trainer, pl_module: LightningModule) -> None:
        ema = find_ema(trainer) if self.use_ema else None
        if ema is not None:  # the EMA callback may come after this one in the list
            ema.catch_up(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step
            self._catch_up_ema(trainer, pl_module)
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._catch_up_ema(trainer, pl_module)
            self.evaluate(trainer, pl_module)

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _weights(self, trainer: Trainer, pl_module: LightningModule) -> ContextManager[Any]:
        if not self.use_ema:
            return nullcontext()
        ema = find_ema(trainer)
        if ema is None or not ema.shadow:
            if not self._warned_no_ema and trainer.is_global_zero:
                warnings.warn(f"evaluation {self.name!r}: ema=true but no EMA weights are available; using the raw "
                              "weights", stacklevel=2)
            self._warned_no_ema = True
            return nullcontext()
        return ema.averaged(pl_module)

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> list[RunResult]:
        """One evaluation on every rank; returns the (rank-identical) results and logs them from rank 0."""
        if not self.evaluator.prepared:
            self.on_fit_start(trainer, pl_module)
        step, rank, world = trainer.global_step, trainer.global_rank, trainer.world_size
        bar = None
        if self.progress and trainer.is_global_zero:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.evaluator.n_batches(rank, world), desc=f"{self.name} @ step {step}", leave=False,
                       dynamic_ncols=True, file=sys.stderr)
        was_training = pl_module.training
        pl_module.eval()
        start = time.perf_counter()
        try:
            with self._weights(trainer, pl_module):
                results = self.evaluator.evaluate(self._score_model(pl_module), pl_module.device, rank=rank,
                                                  world_size=world, step=step, progress=bar)
        finally:
            pl_module.train(was_training)
            if bar is not None:
                bar.close()
        values = self.evaluator.tags(results)
        for tag, v in values.items():
            trainer.callback_metrics[tag] = torch.tensor(v)
        self.history.append({"step": step, "values": values})
        if bar is not None:
            bar.write(self.summary_line(step, results, time.perf_counter() - start), file=sys.stderr)
        if trainer.is_global_zero:  # every collective is done: rank 0 alone may log now
            try:
                self._log(trainer, values, results)
            except Exception as err:  # noqa: BLE001 - a plotting problem must not stop training
                warnings.warn(f"evaluation {self.name!r}: logging failed: {type(err).__name__}: {err}", stacklevel=2)
        return results

    def summary_line(self, step: int, results: Sequence[RunResult], seconds: float) -> str:
        """``val @ step 500: 8 runs x 128 samples in 12.3 s; fd_digits best edm_heun/nfe35 1.23``."""
        line = (f"{self.name} @ step {step}: {len(results)} runs x {len(self.seeds)} samples in {seconds:.1f} s")
        if self.metric_names:
            m = self.metric_names[0]
            scored = [(r.values[m], f"{r.label}/{r.budget}") for r in results if r.values[m] == r.values[m]]
            if scored:
                best = min(scored)
                line += f"; {m} best {best[1]} {best[0]:.4g}"
        return line

    # ---- logging (rank 0, after all collectives) -------------------------------------------------------------
    def _log(self, trainer: Trainer, values: dict[str, float], results: list[RunResult]) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)
        experiments = [lg.experiment for lg in trainer.loggers
                       if hasattr(getattr(lg, "experiment", None), "add_figure")]
        if not experiments:
            return
        plt = pyplot()
        for r in results:
            if not self.log_images or r.samples is None:
                continue
            tag = f"{self.name}/samples/{r.label}/{r.budget}"
            if r.samples.ndim == 4:
                grid = image_grid(r.samples, upscale=max(1, 32 // max(r.samples.shape[-2:])))
                for exp in experiments:
                    exp.add_image(tag, grid.numpy(), step, dataformats="HWC")
            elif r.samples.ndim == 2 and r.samples.shape[1] == 2:
                fig = scatter_figure(r.samples, f"{r.label} {r.budget} (nfe {r.nfe:.1f})")
                self._add_figure(experiments, tag, fig, step, plt)
        if self.metric_names:
            fig = metric_figure(results, self.metric_names, title=f"{self.name} @ step {step}")
            self._add_figure(experiments, f"{self.name}/metrics_vs_nfe", fig, step, plt)

    @staticmethod
    def _add_figure(experiments: list[Any], tag: str, fig: Any, step: int, plt: Any) -> None:
        for exp in experiments:
            exp.add_figure(tag, fig, step, close=False)
        plt.close(fig)


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
