"""Training is right, not just running: exact resume, DDP agreement, EMA math, and reaching the oracle's irreducible loss."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiff.losses import diffusion_loss
from fastdiff.model import ScoreModel
from fastdiff.nets import get_net
from fastdiff.oracle import GaussianMixture
from fastdiff.processes import PSLD, VE, VP

pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

from fastdiff.lightning.callbacks.ema import EMA  # noqa: E402
from fastdiff.lightning.checkpoint import CheckpointError, load_checkpoint, load_score_model  # noqa: E402
from fastdiff.lightning.module import DiffusionModule, to_primitive  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "seed": 3,
    "process": {"name": "vp"},
    "net": {"name": "mlp", "hidden": 32, "depth": 1, "emb_dim": 16},
    "model": {"parameterization": None, "sigma_data": 0.5},
    "optim": {"lr": 2e-3, "warmup_steps": 5, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 1.0},
}
DATA = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))  # 4 batches of 16 per epoch


class Recorder(Callback):
    """Records the learning rate used by each step and the parameters after it."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.params: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.params.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


def fit(max_steps: int, callbacks: list, ckpt_path: str | None = None, config: dict = CONFIG,
        precision: str = "32-true") -> tuple[DiffusionModule, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    module = DiffusionModule(config, (2,))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=callbacks, deterministic=True, gradient_clip_val=1.0,
                         limit_val_batches=0, num_sanity_val_steps=0, precision=precision,
                         enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))
    loader = torch.utils.data.DataLoader(DATA, batch_size=16, shuffle=False)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def flat_optimizer_state(trainer: pl.Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for pid, st in trainer.optimizers[0].state_dict()["state"].items():
        for k, v in st.items():
            out[f"{pid}.{k}"] = torch.as_tensor(v)
    return out


def test_exact_resume_from_checkpoint(tmp_path: Path) -> None:
    """16 steps straight == 8 steps, checkpoint, Lightning resume to 16: weights, EMA, Adam and scheduler state."""
    ema_a = EMA(decay=0.9)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=8, save_top_k=-1, filename="{step}")
    straight, tr_a = fit(16, [ema_a, ckpt_cb])
    ckpt = tmp_path / "step=8.ckpt"
    assert ckpt.exists(), sorted(os.listdir(tmp_path))
    raw = torch.load(ckpt, weights_only=True)  # primitives and tensors only
    assert raw["global_step"] == 8 and raw["hyper_parameters"]["data_shape"] == [2]
    assert raw["hyper_parameters"]["config"] == to_primitive(CONFIG)
    ema_b = EMA(decay=0.9)
    resumed, tr_b = fit(16, [ema_b], ckpt_path=str(ckpt))
    assert tr_b.global_step == 16 and ema_b.num_updates == ema_a.num_updates == 16
    assert_same(dict(straight.named_parameters()), dict(resumed.named_parameters()))
    assert_same(ema_a.shadow, ema_b.shadow)
    assert_same(flat_optimizer_state(tr_a), flat_optimizer_state(tr_b))
    assert tr_a.lr_scheduler_configs[0].scheduler.state_dict() == tr_b.lr_scheduler_configs[0].scheduler.state_dict()
    # the weights moved (otherwise equality above would prove nothing)
    first = torch.load(ckpt, weights_only=True)["state_dict"]
    assert not torch.equal(first["model.net.out.weight"], straight.model.net.out.weight)


def test_ema_math_lr_warmup_and_loaded_weights(tmp_path: Path) -> None:
    """EMA with warm-up decay min(d, (1+n)/(10+n)) recomputed by hand; lr = lr0 min(1, (k+1)/W); EMA load."""
    rec, ema = Recorder(), EMA(decay=0.95, warmup=True)
    pl.seed_everything(0, verbose=False)  # as fit() does before building its module
    init = {n: p.detach().clone() for n, p in DiffusionModule(CONFIG, (2,)).named_parameters()}
    module, trainer = fit(12, [rec, ema])
    lr0, warm = CONFIG["optim"]["lr"], CONFIG["optim"]["warmup_steps"]
    assert rec.lrs == pytest.approx([lr0 * min(1.0, (k + 1) / warm) for k in range(12)], rel=1e-12)
    # the module built inside fit() used the same seed, so its initial weights equal `init`
    shadow = {n: v.clone() for n, v in init.items()}
    for n_upd, params in enumerate(rec.params):
        d = min(0.95, (1 + n_upd) / (10 + n_upd))
        shadow = {n: d * shadow[n] + (1 - d) * params[n] for n in shadow}
    for n in shadow:
        torch.testing.assert_close(ema.shadow[n], shadow[n], rtol=1e-6, atol=1e-7)
    # saving inside ema.averaged() still writes raw weights to state_dict and the shadow to the callback state
    path = tmp_path / "swapped.ckpt"
    raw_params = {n: p.detach().clone() for n, p in module.named_parameters()}
    with ema.averaged(module):
        assert torch.equal(module.model.net.out.weight, ema.shadow["model.net.out.weight"])
        trainer.save_checkpoint(path)
    assert_same(raw_params, dict(module.named_parameters()))
    ck = load_checkpoint(path)
    assert_same({n: ck["state_dict"][n] for n in raw_params}, raw_params)
    assert_same(ck["callbacks"]["EMA"]["shadow"], ema.shadow)
    ema_model, raw_model = load_score_model(path), load_score_model(path, use_ema=False)
    assert isinstance(ema_model, ScoreModel) and not ema_model.training
    assert_same({f"model.{k}": v for k, v in ema_model.state_dict().items()}, ema.shadow)
    assert_same({f"model.{k}": v for k, v in raw_model.state_dict().items()}, raw_params)


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match=r"not a fastdiff checkpoint: it has no hyper_parameters \(keys: "
                                              r"state_dict\), so no 'config' and 'data_shape'"):
        load_checkpoint(foreign)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"obj": Recorder()}, unsafe)
    with pytest.raises(CheckpointError, match="is a pickle holding a reference to the Python object "
                                              "test_training.Recorder; it cannot be loaded safely") as info:
        load_checkpoint(unsafe)
    assert "weights_only" not in str(info.value) and "False" not in str(info.value)  # never advise the unsafe option
    module = DiffusionModule(CONFIG, (2,))
    sd = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    sd["model.net.extra"] = sd.pop("model.net.out.bias")
    mismatch = tmp_path / "mismatch.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": dict(module.hparams)}, mismatch)
    with pytest.raises(CheckpointError, match=r"missing keys \['net.out.bias'\].*unexpected keys \['net.extra'\]"):
        load_score_model(mismatch)


def _good_checkpoint(path: Path) -> bytes:
    module = DiffusionModule(CONFIG, (2,))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("case,message", [
    ("random", r"is not a torch checkpoint: unrecognised content \(starts with b'"),
    ("text", r"is not a torch checkpoint: unrecognised content \(starts with b'this is "),
    ("empty", r"is an empty file, not a checkpoint"),
    ("truncated", r"is truncated or corrupt: a zip archive \(the torch.save format\) whose directory cannot be read "
                  r"\(\d+ bytes: "),
    ("cut_end", r"is truncated or corrupt: a zip archive"),
    ("pickle", r"is a plain Python pickle, not a torch checkpoint"),
    ("zip", r"is a zip archive but not a torch checkpoint \(no data.pkl among 1 entries\)"),
    ("tensor", r"holds a Tensor, not a checkpoint dict; not a fastdiff checkpoint"),
    ("lightning", r"is not a fastdiff checkpoint: its hyper_parameters \(lr\) lack 'config' and 'data_shape'"),
])
def test_bad_checkpoint_files_give_one_line_errors(case: str, message: str, tmp_path: Path) -> None:
    """Junk, cut-short and foreign files: a CheckpointError naming the path and what the file is, on one line."""
    import pickle
    import zipfile

    path = tmp_path / f"{case}.ckpt"
    if case == "random":
        path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1)).tolist()))
    elif case == "text":
        path.write_text("this is not a checkpoint\n" * 20)
    elif case == "empty":
        path.write_bytes(b"")
    elif case in ("truncated", "cut_end"):
        data = _good_checkpoint(tmp_path / "good.ckpt")
        assert load_score_model(tmp_path / "good.ckpt", use_ema=False).data_shape == (2,)  # the intact file loads
        path.write_bytes(data[:len(data) // 2] if case == "truncated" else data[:-1])
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}}))
    elif case == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "hello")
    elif case == "tensor":
        torch.save(torch.zeros(3), path)
    else:  # a Lightning checkpoint from some other LightningModule
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, path)
    for load in (load_checkpoint, load_score_model):
        with pytest.raises(CheckpointError) as info:
            load(path)
        text = str(info.value)
        assert "\n" not in text and text.startswith(str(path)), text
        assert re.search(message, text), text


def test_config_must_be_primitive() -> None:
    import numpy as np
    from omegaconf import OmegaConf

    cfg = to_primitive(OmegaConf.create({"a": {"b": [1, 2.5], "c": "${x}"}, "x": 4}))
    assert cfg == {"a": {"b": [1, 2.5], "c": 4}, "x": 4}
    assert type(cfg["a"]) is dict and type(cfg["a"]["b"]) is list
    cfg = to_primitive({"c": np.float32(0.5), "d": np.int64(3), "e": (1, 2)})
    assert cfg == {"c": 0.5, "d": 3, "e": [1, 2]} and type(cfg["d"]) is int and type(cfg["c"]) is float
    with pytest.raises(TypeError, match=r"config.x: value .* is not a config primitive"):
        to_primitive({"x": object()})
    with pytest.raises(ValueError, match="optim.lrr: unknown key"):
        DiffusionModule({**CONFIG, "optim": {"lrr": 1.0}}, (2,))


def test_bf16_mixed_training_runs_on_cpu() -> None:
    rec = Recorder()
    module, trainer = fit(3, [rec], precision="bf16-mixed")
    assert trainer.global_step == 3 and all(p.dtype == torch.float32 for p in module.parameters())
    assert not torch.equal(rec.params[0]["model.net.inp.weight"], rec.params[-1]["model.net.inp.weight"])


def test_ddp_two_processes_agree(tmp_path: Path) -> None:
    """2 CPU ranks (gloo): identical weights and EMA after training on different shards; the loss fell."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_train_script.py"), str(tmp_path), "40"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == 2 and r0["global_step"] == r1["global_step"] == 40
    assert r0["first_loss"] != r1["first_loss"]  # different data shards and noise per rank ...
    assert_same(r0["params"], r1["params"])  # ... yet gradients were averaged, so weights agree
    assert_same(r0["ema"], r1["ema"])
    assert r0["ema_updates"] == r1["ema_updates"] == 40
    assert r0["loss_after"] < 0.7 * r0["loss_before"], (r0["loss_before"], r0["loss_after"])


# ---- training reaches the irreducible loss on a Gaussian mixture (oracle scores) ---------------------------

GMM_PROCESSES = {"vp": VP, "ve": lambda: VE(sigma_min=0.01, sigma_max=3.0), "psld": PSLD}


def train_plain(process, parameterization: str, steps: int, gmm: GaussianMixture, depth: int = 1) -> ScoreModel:
    """A plain Adam loop (warm-up + cosine decay) on fresh mixture samples each step."""
    torch.manual_seed(0)
    ch = process.state_channels(gmm.dim)
    net = get_net("mlp", in_channels=ch, out_channels=ch, hidden=64, depth=depth, emb_dim=64)
    model = ScoreModel(net, process, parameterization, sigma_data=0.7)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 5e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = diffusion_loss(model, gmm.sample(256, generator=g).float(), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def eps_error_ratio(model: ScoreModel, gmm: GaussianMixture, n_t: int = 100, per_t: int = 1000) -> tuple[float, float]:
    """(net error, irreducible error): E|eps - eps_hat|^2 vs E|eps - eps*|^2, eps* from the oracle's exact score.

    t ~ U(t_eps_train, T) by stratified midpoints, the same (x0, t, eps) for both; eps_hat from the model's score.
    """
    p = model.process
    g = torch.Generator().manual_seed(2)
    t = (p.t_eps_train + (p.T - p.t_eps_train) * (torch.arange(n_t, dtype=torch.float64) + 0.5) / n_t)
    t = t.repeat_interleave(per_t)
    x0 = gmm.sample(n_t * per_t, generator=g)
    eps = torch.randn(p.state_shape(x0.shape), dtype=torch.float64, generator=g)
    z = p.perturb(x0, t, eps)
    eps_star = p.eps_from_score(gmm.score(p, z, t), z, t)
    with torch.no_grad():
        eps_hat = p.eps_from_score(model(z.float(), t).double(), z, t)
    return (eps - eps_hat).square().mean().item(), (eps - eps_star).square().mean().item()


@pytest.mark.parametrize("name,param", [("vp", "eps"), ("ve", "edm"), ("psld", "eps")])
def test_training_reaches_irreducible_loss(name: str, param: str) -> None:
    gmm = GaussianMixture.ring(k=4, radius=1.0, std=0.2)
    model = train_plain(GMM_PROCESSES[name](), param, 500, gmm)
    err, irreducible = eps_error_ratio(model, gmm)
    assert err <= 1.25 * irreducible, (err, irreducible)


@pytest.mark.slow
@pytest.mark.parametrize("name,param", [("vp", "eps"), ("ve", "eps"), ("psld", "eps"), ("vp", "edm"), ("ve", "edm")])
def test_longer_training_gets_within_5_percent(name: str, param: str) -> None:
    gmm = GaussianMixture.ring(k=4, radius=1.0, std=0.2)
    model = train_plain(GMM_PROCESSES[name](), param, 1500, gmm, depth=2)
    err, irreducible = eps_error_ratio(model, gmm)
    assert err <= 1.05 * irreducible, (err, irreducible)


def test_untrained_model_is_far_from_irreducible() -> None:
    """The metric can fail: the zero-initialised net (eps_hat = 0) is far above the irreducible error."""
    gmm = GaussianMixture.ring(k=4, radius=1.0, std=0.2)
    model = train_plain(VP(), "eps", 0, gmm)
    err, irreducible = eps_error_ratio(model, gmm, n_t=20, per_t=500)
    assert err > 2 * irreducible, (err, irreducible)
