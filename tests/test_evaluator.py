"""The Lightning-free Evaluator, the callback's EMA handling whatever the callback order, the custom-scalars layout
in the event file and the metric-vs-NFE figure."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from fastdiff.evaluation import Evaluator
from fastdiff.evaluation.plots import custom_scalars_layout, metric_figure, y_scale
from fastdiff.evaluation.evaluator import RunResult
from fastdiff.lightning.callbacks.ema import EMA
from fastdiff.lightning.callbacks.sampling import build_evaluation_callbacks
from fastdiff.lightning.module import DiffusionModule
from fastdiff.metrics.stats import load_data_tensor
from fastdiff.samplers import get_sampler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import ddp_eval_script  # noqa: E402

TOY = ddp_eval_script.CONFIG


def test_evaluator_without_lightning_matches_an_independent_frechet_distance() -> None:
    """raw_fd of 2-D samples = ||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2)), recomputed here with numpy/scipy
    from the sampler's own output and the data set. Both sides are float64 on the same numbers; scipy's Schur sqrtm
    and the metric's eigen-route differ by round-off (~1e-12 relative on 2x2 matrices), so rel 1e-8 is generous
    and a wrong normalisation (ddof 0 vs 1 changes S by 1/n = 1/40 -> ~1e-2 relative) fails it."""
    torch.manual_seed(0)
    module = DiffusionModule(TOY, (2,)).eval()
    ev = Evaluator([{"sampler": "euler_maruyama", "nfe": 6}], data_shape=(2,), kind="vector", n_samples=40,
                   seeds=5, batch_size=16, metrics=["raw_fd"], ref_samples=300, data=TOY["data"])
    ev.prepare(module.model.process, torch.device("cpu"))
    (result,) = ev.evaluate(module.model, torch.device("cpu"))
    assert (result.label, result.budget, result.nfe) == ("euler_maruyama", "nfe6", 6.0)

    with torch.no_grad():
        x = get_sampler("euler_maruyama", nfe=6).sample(module.model, module.model.process, (40, 2),
                                                        seeds=range(5, 45)).x.double().numpy()
    data = {k: v for k, v in TOY["data"].items() if k != "name"}
    ref = load_data_tensor("toy2d", max_items=300, **data).double().numpy()
    mu_g, mu_r = x.mean(0), ref.mean(0)
    s_g, s_r = np.cov(x, rowvar=False, ddof=1), np.cov(ref, rowvar=False, ddof=1)
    fd = float(((mu_g - mu_r) ** 2).sum() + np.trace(s_g + s_r - 2 * scipy.linalg.sqrtm(s_g @ s_r).real))
    assert result.values["raw_fd"] == pytest.approx(fd, rel=1e-8)
    assert ev.tags([result])["val/raw_fd/euler_maruyama/nfe6"] == result.values["raw_fd"]


def _fit(order: str, tmp_path: Path | None = None, evaluation: list[dict[str, Any]] | None = None) -> Any:
    """Two steps with lr > 0 (the weights and the EMA move each step), evaluation at step 2."""
    pl.seed_everything(0, verbose=False)
    cfg = {**TOY, "optim": {"lr": 0.05, "warmup_steps": 0, "grad_clip": 1.0}}
    module = DiffusionModule(cfg, (2,))
    evaluation = evaluation or [{"samplers": [{"sampler": "euler_maruyama", "nfe": [3, 4]}], "n_samples": 8,
                                 "every_n_steps": 2, "metrics": ["raw_fd"], "ref_samples": 64, "progress": False,
                                 "log_images": False}]
    callbacks = build_evaluation_callbacks(evaluation, (2,), "vector", data=cfg["data"])
    ema = EMA(decay=0.9)
    order_cbs = [ema, *callbacks] if order == "ema_first" else [*callbacks, ema]
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="") if tmp_path is not None else False
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=logger, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=order_cbs,
                         limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=ddp_eval_script.toy_loader())
    return trainer, callbacks, ema


def test_evaluation_sees_the_current_steps_ema_whatever_the_callback_order() -> None:
    """Listed after the evaluation, the EMA callback's step-2 update would otherwise come after the evaluation;
    the callback applies it first (EMA.catch_up), and EMA's own hook then skips it: same values, same EMA state."""
    _, first, ema_a = _fit("ema_first")
    _, last, ema_b = _fit("ema_last")
    assert ema_a.num_updates == ema_b.num_updates == 2
    assert all(torch.equal(ema_a.shadow[k], ema_b.shadow[k]) for k in ema_a.shadow)
    va, vb = first[0].history[-1]["values"], last[0].history[-1]["values"]
    assert va.keys() == vb.keys() and all(va[k] == vb[k] for k in va if "samples_per_s" not in k)


def test_without_the_catch_up_a_late_ema_gives_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """The previous test can fail: with the catch-up switched off, EMA listed last is one update behind."""
    from fastdiff.lightning.callbacks.sampling import SamplingEvaluation

    _, first, _ = _fit("ema_first")
    monkeypatch.setattr(SamplingEvaluation, "_catch_up_ema", lambda self, trainer, module: None)
    _, late, _ = _fit("ema_last")
    va, vb = first[0].history[-1]["values"], late[0].history[-1]["values"]
    assert va["val/raw_fd/euler_maruyama/nfe3"] != vb["val/raw_fd/euler_maruyama/nfe3"]


def read_layout(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    events = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(events[0].tensor_proto.string_val[0])
    return layout, acc.Tags()["scalars"], len(events)


def test_custom_scalars_layout_in_the_event_file(tmp_path: Path) -> None:
    """One layout event for the run, one category per evaluation, one multiline chart per metric whose regex
    selects exactly that metric's tags, one per sampler@budget."""
    import re

    evaluation = [{"samplers": [{"sampler": "euler_maruyama", "nfe": [3, 4]}, {"sampler": "edm_heun", "nfe": 3}],
                   "n_samples": 8, "every_n_steps": 2, "metrics": ["raw_fd", "sliced_w"], "ref_samples": 64,
                   "progress": False, "log_images": False},
                  {"name": "tiny", "samplers": [{"sampler": "euler_maruyama", "nfe": 3}], "n_samples": 4,
                   "every_n_steps": 2, "metrics": ["mmd"], "ref_samples": 64, "progress": False,
                   "log_images": False}]
    _fit("ema_first", tmp_path, evaluation)
    layout, scalars, n_events = read_layout(tmp_path / "tb")
    assert n_events == 1
    cats = {c.title: {ch.title: list(ch.multiline.tag) for ch in c.chart} for c in layout.category}
    assert set(cats) == {"val", "tiny"}
    assert set(cats["val"]) == {"raw_fd", "sliced_w", "nfe", "samples_per_s"} and set(cats["tiny"]) == {
        "mmd", "nfe", "samples_per_s"}
    for cat, charts in cats.items():
        for metric, (regex,) in charts.items():
            lines = sorted(t for t in scalars if re.match(regex, t))
            want = sorted(t for t in scalars if t.startswith(f"{cat}/{metric}/"))
            assert lines == want and len(lines) == (3 if cat == "val" else 1), (cat, metric, lines)


def _result(label: str, nfe: float, **values: float) -> RunResult:
    return RunResult(label, f"nfe{int(nfe)}", values, nfe=nfe, samples_per_s=1.0)


def test_metric_figure_uses_log_or_symlog_y_and_fits_a_window() -> None:
    """fd 41.8 beside 1-2 (the issue's outlier) -> log y; KID estimates below zero -> symlog with the smallest
    |value| as linear threshold; 3 metrics -> a 2x2 grid (legend in the spare panel) at most 10 in = 1000 px wide
    at TensorBoard's 100 dpi, which fits the 1600-px window where 3 panels of 4.5 in were clipped."""
    assert y_scale([41.8, 1.2, 2.0]) == ("log", {})
    assert y_scale([0.02, -0.001, float("nan")]) == ("symlog", {"linthresh": 0.001})
    assert y_scale([float("nan")]) == ("linear", {})
    results = [_result("edm_heun", n, fd=v, kid=k, raw=v) for n, v, k in ((9, 41.8, 0.05), (19, 1.5, -0.002),
                                                                           (35, 1.2, 0.001))]
    results += [_result("restart", n, fd=v, kid=k, raw=v) for n, v, k in ((20, 2.0, 0.003), (43, 1.1, 0.0005))]
    fig = metric_figure(results, ["fd", "kid", "raw"], title="val @ step 500")
    axes = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_yscale() for ax in axes] == ["log", "symlog", "log"]
    assert fig.get_size_inches()[0] * 100 <= 1000 and len(fig.axes) == 4
    assert fig.axes[3].get_legend() is not None and [t.get_text() for t in fig.axes[3].get_legend().get_texts()] == [
        "edm_heun", "restart"]


def test_layout_regexes_escape_names() -> None:
    layout = custom_scalars_layout("val.x", ["fd_digits"])
    assert layout == {"val.x": {"fd_digits": ["Multiline", [r"^val\.x/fd_digits/.*"]],
                                "nfe": ["Multiline", [r"^val\.x/nfe/.*"]],
                                "samples_per_s": ["Multiline", [r"^val\.x/samples_per_s/.*"]]}}
