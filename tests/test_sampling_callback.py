"""SamplingEvaluation: config checks, TensorBoard tags, EMA / eval mode, failing samplers, DDP = 1 process."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from fastdiff.config import ConfigError
from fastdiff.data import DiffusionDataModule
from fastdiff.lightning.callbacks.ema import EMA
from fastdiff.lightning.callbacks.sampling import SamplingEvaluation, build_evaluation_callbacks
from fastdiff.lightning.module import DiffusionModule
from fastdiff.metrics import ReferenceStats, StatsMismatchError, save_stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import ddp_eval_script  # noqa: E402

TOY = ddp_eval_script.CONFIG
BASE = {"samplers": [{"sampler": "euler_maruyama", "nfe": 3}], "every_n_steps": 1, "metrics": ["raw_fd"]}


def build(extra: dict[str, Any], shape: tuple[int, ...] = (2,), kind: str = "vector") -> list[SamplingEvaluation]:
    return build_evaluation_callbacks([{**BASE, **extra}], shape, kind, data=TOY["data"])


# ---- configuration ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, match", [
    ({"every_n_step": 5}, r"evaluation\[0\]\.every_n_step: unknown key — allowed: samplers, name"),
    ({"samplers": [{"sampler": "restart", "nfe": 20, "opts": {}}]}, r"evaluation\[0\]\.samplers\[0\]\.opts: unknown key — allowed: sampler, nfe, options, label"),
    ({"samplers": [{"sampler": "ggf", "nfe": 20}]}, "adaptive: give tolerances as a list of option dicts"),
    ({"samplers": [{"sampler": "euler_maruyama"}]}, "nfe: required"),
    ({"samplers": [{"sampler": "nope", "nfe": 3}]}, "unknown sampler 'nope'"),
    ({"samplers": [{"sampler": "edm_heun", "nfe": 0}]}, "below its minimum"),
    ({"samplers": [{"sampler": "euler_maruyama", "nfe": 3, "options": {"foo": 1}}]}, "unknown option"),
    ({"samplers": [{"sampler": "euler_maruyama", "nfe": [3, 3]}]}, "appears twice; give the entries distinct labels"),
    ({"n_samples": 10, "seeds": "0-4"}, r"evaluation\[0\]\.seeds: '0-4' gives 5 seeds but n_samples is 10"),
    ({"n_samples": 0}, r"evaluation\[0\]\.n_samples: 0 is out of range — must be >= 1"),
    ({"every_n_epochs": 1}, r"evaluation\[0\]: both of every_n_steps and every_n_epochs given — give exactly one"),
    ({"metrics": ["fid"]}, "metric 'fid' needs image data"),
    ({"metrics": ["fd_digits"]}, "names data set 'digits', but the data set is 'toy2d'"),
    ({"metrics": ["mmdd"]}, r"evaluation\[0\]\.metrics: unknown metric 'mmdd'"),
    ({"ema": "yes"}, r"evaluation\[0\]\.ema: got str 'yes' — expected bool"),
    ({"features": {"vgg": {}}}, r"evaluation\[0\]\.features\.vgg: unknown feature extractor"),
])
def test_config_errors_name_the_key(extra: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(extra)


def test_config_budgets_and_tags() -> None:
    cb = build({"samplers": [{"sampler": "restart", "nfe": [20, 30]},
                             {"sampler": "ggf", "options": [{"eps_rel": 0.05}, {"eps_rel": 0.1, "eps_abs": 0.01}]},
                             {"sampler": "euler_maruyama", "nfe": 10, "label": "em_quad",
                              "options": {"grid": "quadratic"}}]})[0]
    assert [(r.label, r.budget) for r in cb.runs] == [("restart", "nfe20"), ("restart", "nfe30"),
                                                      ("ggf", "eps_rel=0.05"), ("ggf", "eps_abs=0.01,eps_rel=0.1"),
                                                      ("em_quad", "nfe10")]
    assert all(r.sampler.nfe <= int(r.budget[3:]) for r in cb.runs if r.budget.startswith("nfe"))
    assert cb.runs[3].sampler.options.eps_abs == 0.01 and cb.runs[4].sampler.options.grid == "quadratic"
    assert cb.seeds == list(range(128)) and cb.name == "val"
    with pytest.raises(ConfigError, match="'val' is used twice"):
        build_evaluation_callbacks([BASE, BASE], (2,), "vector")


# ---- evaluation mechanics without a Trainer --------------------------------------------------------------------
def stub_trainer(callbacks: list[Any]) -> SimpleNamespace:
    return SimpleNamespace(world_size=1, global_rank=0, is_global_zero=True, global_step=7, callbacks=callbacks,
                           callback_metrics={}, loggers=[], strategy=None, datamodule=None)


class Spy:
    """Sampler wrapper recording the first weight the model had and whether it was in training mode."""

    def __init__(self, inner: Any, module: DiffusionModule) -> None:
        self.inner, self.module, self.seen = inner, module, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        p = next(self.module.parameters())
        self.seen.append((p.detach().flatten()[0].item(), self.module.training, torch.is_grad_enabled()))
        return self.inner.sample(*args, **kwargs)


def test_evaluation_uses_ema_weights_in_eval_mode_and_restores() -> None:
    torch.manual_seed(0)
    module = DiffusionModule(TOY, (2,))
    module.train()
    ema = EMA(decay=0.5)
    ema.shadow = {n: p.detach().clone() + 1.0 for n, p in module.named_parameters()}  # distinct "EMA" weights
    cb = build({"n_samples": 6, "batch_size": 4, "progress": False})[0]
    spy = Spy(cb.runs[0].sampler, module)
    cb.runs[0].sampler = spy
    raw = next(module.parameters()).detach().flatten()[0].item()
    trainer = stub_trainer([ema, cb])
    cb.on_fit_start(trainer, module)
    results = cb.evaluate(trainer, module)
    assert spy.seen and all(w == pytest.approx(raw + 1.0) and not training and not grad
                            for w, training, grad in spy.seen)
    assert module.training and next(module.parameters()).flatten()[0].item() == raw and not ema.swapped_in
    assert math.isfinite(results[0].values["raw_fd"]) and results[0].nfe == 3
    assert "val/raw_fd/euler_maruyama/nfe3" in trainer.callback_metrics


class FakeExperiment:
    """Records what a TensorBoard SummaryWriter would receive."""

    def __init__(self) -> None:
        self.figures: list[str] = []
        self.images: list[str] = []
        self.scalars: dict[str, float] = {}

    def add_figure(self, tag: str, fig: Any, step: int, close: bool = True) -> None:
        assert fig.axes, tag
        self.figures.append(tag)

    def add_image(self, tag: str, img: Any, step: int, dataformats: str = "CHW") -> None:
        self.images.append(tag)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self.scalars.update(values)


def test_vector_data_logs_scatter_plots_and_metric_figure() -> None:
    module = DiffusionModule(TOY, (2,))
    cb = build({"samplers": [{"sampler": "euler_maruyama", "nfe": [3, 4]}, {"sampler": "edm_heun", "nfe": 3}],
                "n_samples": 8, "metrics": ["raw_fd", "sliced_w"], "ref_samples": 64, "progress": False})[0]
    exp = FakeExperiment()
    trainer = stub_trainer([cb])
    trainer.loggers = [SimpleNamespace(experiment=exp, log_metrics=exp.log_metrics)]
    cb.on_fit_start(trainer, module)
    with pytest.warns(UserWarning, match="ema=true but no EMA weights are available; using the raw weights"):
        cb.evaluate(trainer, module)
    assert exp.figures == ["val/samples/euler_maruyama/nfe3", "val/samples/euler_maruyama/nfe4",
                           "val/samples/edm_heun/nfe3", "val/metrics_vs_nfe"] and not exp.images
    want = {"val/sliced_w/edm_heun/nfe3", "val/nfe/euler_maruyama/nfe4", "val/samples_per_s/edm_heun/nfe3"}
    assert want <= set(exp.scalars)


def test_stats_extractor_mismatch_is_refused(tmp_path: Path) -> None:
    path = save_stats(ReferenceStats(torch.zeros(64, dtype=torch.float64), torch.eye(64, dtype=torch.float64), 10,
                                     extractor="classifier-digits-1x8x8-00000000"), tmp_path / "ref.npz")
    cb = build({"reference": {"raw": str(path)}})[0]
    module = DiffusionModule(TOY, (2,))
    with pytest.raises(StatsMismatchError, match="computed with feature extractor 'classifier-digits.*uses 'raw-2'"):
        cb.on_fit_start(stub_trainer([cb]), module)


# ---- a short real run: TensorBoard tags ------------------------------------------------------------------------
def read_tags(log_dir: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc.Tags()


@pytest.mark.filterwarnings("ignore:sampler 'ggf'.*reached max_nfe")
def test_digits_run_logs_tags_to_tensorboard(tmp_path: Path) -> None:
    cfg = {"seed": 0, "process": {"name": "vp"}, "model": {"parameterization": None},
           "net": {"name": "unet", "channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": [],
                   "dropout": 0.0}, "optim": {"lr": 1e-3, "warmup_steps": 0}}
    evaluation = [{"samplers": [{"sampler": "edm_heun", "nfe": [3, 5]},
                                {"sampler": "ggf", "options": [{"eps_rel": 0.5, "eps_abs": 0.5, "max_nfe": 12}]}],
                   "n_samples": 12, "batch_size": 12, "every_n_steps": 2, "metrics": ["fd_digits", "raw_fd"],
                   "features": {"classifier": {"cache_dir": str(tmp_path / "cache")}}, "progress": False}]
    pl.seed_everything(0, verbose=False)
    dm = DiffusionDataModule("digits", batch_size=32)
    module = DiffusionModule(cfg, dm.data_shape)
    callbacks = build_evaluation_callbacks(evaluation, dm.data_shape, "image")  # data from the trainer's datamodule
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=TensorBoardLogger(str(tmp_path), name="tb"),
                         callbacks=[EMA(), *callbacks], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    tags = read_tags(Path(trainer.logger.log_dir))
    for run in ("edm_heun/nfe3", "edm_heun/nfe5", "ggf/eps_abs=0.5,eps_rel=0.5,max_nfe=12"):
        for metric in ("fd_digits", "raw_fd", "nfe", "samples_per_s"):
            assert f"val/{metric}/{run}" in tags["scalars"], (metric, run, tags["scalars"])
        assert f"val/samples/{run}" in tags["images"]
    assert "val/metrics_vs_nfe" in tags["images"]
    values = callbacks[0].history[-1]["values"]
    assert values["val/nfe/edm_heun/nfe5"] == 5 and 3 <= values["val/nfe/ggf/eps_abs=0.5,eps_rel=0.5,max_nfe=12"] <= 12
    assert all(math.isfinite(v) and v >= 0 for k, v in values.items() if "/fd_digits/" in k)


# ---- DDP: two ranks give the single-process values; a sampler failing on one rank hangs nobody ----------------
@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, callbacks = ddp_eval_script.run(str(tmp_path_factory.mktemp("single")), devices=1)
    assert trainer.global_step == 2  # training went on after the failure
    return callbacks, [str(w.message) for w in caught]


def test_failing_sampler_is_reported_and_skipped(single_process: tuple[list[Any], list[str]]) -> None:
    callbacks, messages = single_process
    fail = ddp_eval_script.FAIL_SEED
    assert callbacks[0].failures == [{"step": 2, "label": "failing", "budget": "nfe3", "seeds": [fail],
                                      "error": callbacks[0].failures[0]["error"]}]
    assert any("sampler 'failing' (nfe3) failed for seeds" in m and f"[{fail}]" in m for m in messages), messages
    values = callbacks[0].history[-1]["values"]
    assert math.isnan(values["val/raw_fd/failing/nfe3"]) and math.isfinite(values["val/raw_fd/euler_maruyama/nfe4"])


def test_ddp_two_ranks_match_single_process(tmp_path: Path, single_process: tuple[list[Any], list[str]]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_eval_script.py"), str(tmp_path), "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    callbacks, _ = single_process
    for i, cb in enumerate(callbacks):
        want = cb.history[-1]["values"]
        for r in ranks:
            got = r["history"][i][-1]["values"]
            assert set(got) == set(want)
            for tag, v in want.items():
                if "samples_per_s" in tag:
                    continue
                assert (math.isnan(v) and math.isnan(got[tag])) or got[tag] == pytest.approx(v, rel=1e-9), tag
        assert [f["seeds"] for f in ranks[0]["failures"][i]] == [f["seeds"] for f in cb.failures]
