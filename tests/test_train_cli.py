"""train.py end to end (toy2d + small MLP, a few steps): files written, safe checkpoint, resume, CLI errors."""
from __future__ import annotations

import glob
import os

import pytest
import torch

from fastdiff.cli.train import main, run_name
from fastdiff.config import load_config

TINY = ["data.name=toy2d", "data.n=2000", "data.batch_size=64", "net.name=mlp", "net.hidden=32", "net.depth=1",
        "net.emb_dim=16", "trainer.max_steps=30", "trainer.checkpoint_every_n_steps=20", "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu", "final_samples.n=50", "final_samples.nfe=10", "optim.warmup_steps=5"]
EVAL = ("evaluation=[{samplers: [{sampler: euler_maruyama, nfe: 4}], n_samples: 16, batch_size: 16, "
        "every_n_steps: 20, metrics: [sliced_w], ref_samples: 100, progress: false}]")


def _scalar_steps(event_file: str, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(event_file)
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_train_end_to_end_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = TINY + [EVAL, f"out_dir={out}"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    final = os.path.join(out, "checkpoints", "step=30.ckpt")
    assert line.startswith("done: steps=30 final_loss=") and f"checkpoint={final}" in line
    assert f"samples={os.path.join(out, 'samples.png')}" in line
    for name in ("step=20.ckpt", "step=30.ckpt", "last.ckpt"):
        assert os.path.isfile(os.path.join(out, "checkpoints", name)), name

    # the resolved config is written and reads back to the same config
    assert load_config(os.path.join(out, "config.yaml"), []) == load_config(None, args)

    # checkpoints hold only tensors and primitives, with the config and the EMA state
    ckpt = torch.load(final, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 30
    assert ckpt["hyper_parameters"]["config"] == load_config(None, args)
    assert ckpt["hyper_parameters"]["data_shape"] == [2]
    assert ckpt["callbacks"]["EMA"]["num_updates"] == 30
    from fastdiff.lightning.checkpoint import load_score_model

    model = load_score_model(final)
    assert model(torch.zeros(3, 2), torch.full((3,), 0.5)).shape == (3, 2)

    # TensorBoard got the training loss at every step 0..29
    events = glob.glob(os.path.join(out, run_name(out), "events.out.tfevents.*"))
    assert len(events) == 1
    assert _scalar_steps(events[0], "train/loss") == list(range(30))
    assert _scalar_steps(events[0], "val/sliced_w/euler_maruyama/nfe4") == [20]  # the evaluation callback ran

    from PIL import Image

    with Image.open(os.path.join(out, "samples.png")) as im:
        assert im.format == "PNG" and min(im.size) >= 100

    # resume: only steps 30..39 run (a fresh start would log from step 0 again)
    assert main(args[:-1] + ["trainer.max_steps=40", "trainer.ckpt_path=last", f"out_dir={out}"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("done: steps=40 ")
    last = torch.load(os.path.join(out, "checkpoints", "last.ckpt"), map_location="cpu", weights_only=True)
    assert last["global_step"] == 40 and last["callbacks"]["EMA"]["num_updates"] == 40
    assert os.path.isfile(os.path.join(out, "checkpoints", "step=40.ckpt"))
    new_events = sorted(set(glob.glob(os.path.join(out, run_name(out), "events.out.tfevents.*"))) - set(events))
    assert len(new_events) == 1
    assert _scalar_steps(new_events[0], "train/loss") == list(range(30, 40))


@pytest.mark.parametrize("args,message", [
    (["optim.lrr=1"], "error: optim.lrr: unknown key — allowed: lr,"),
    (["--config", "/nonexistent/x.yaml"], "error: --config: file not found: /nonexistent/x.yaml"),
    (["trainer.ckpt_path=last"], "error: trainer.ckpt_path: no checkpoint to resume from at "),
    (TINY + ["evaluation=[{bogus: 1}]"], "error: evaluation[0].bogus: unknown key — allowed: samplers, name"),
])
def test_cli_errors_exit_2_with_one_line(args, message, tmp_path, capsys):
    assert main(args + [f"out_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(message), err[0]
    assert not os.path.exists(tmp_path / "r" / "checkpoints")


def test_samples_png_tiles_images_and_maps_values(tmp_path):
    from PIL import Image

    from fastdiff.cli.train import save_samples_png

    # three 8x8 images with values -1, 0, 1 -> a 2x2 grid of 64x64 tiles (upscaled 8x), separated by white padding
    x = torch.stack([torch.full((1, 8, 8), v) for v in (-1.0, 0.0, 1.0)])
    save_samples_png(x, tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        g = torch.from_numpy(__import__("numpy").asarray(im.convert("L")).copy()).int()
    tile, pad = 64, 8
    assert g.shape == (2 * tile + 3 * pad, 2 * tile + 3 * pad)
    centres = [(pad + r * (tile + pad) + tile // 2, pad + q * (tile + pad) + tile // 2) for r in (0, 1) for q in (0, 1)]
    assert [int(g[c]) for c in centres] == [0, 128, 255, 255]  # -1 -> 0, 0 -> round(127.5), 1 -> 255, empty: white
    assert (g[:pad] == 255).all() and (g[:, pad + tile:2 * pad + tile] == 255).all()
    assert int(g[pad:pad + tile, pad:pad + tile].max()) == 0  # the whole first tile is black (upscaled, no blur)


def test_final_samples_use_ema_weights_and_chunking_does_not_matter():
    from fastdiff.cli.train import draw_final_samples
    from fastdiff.lightning.callbacks.ema import EMA
    from fastdiff.lightning.module import DiffusionModule
    from fastdiff.samplers import get_sampler

    torch.manual_seed(0)
    cfg = load_config(None, TINY + ["final_samples.n=10"])
    module = DiffusionModule(cfg, (2,))
    raw = {n: p.detach().clone() for n, p in module.named_parameters()}
    ema = EMA()
    ema.shadow = {n: p + 0.3 * torch.randn_like(p) for n, p in raw.items()}
    x_chunked = draw_final_samples(module, ema, cfg, (2,), torch.device("cpu"), chunk=3)
    x_whole = draw_final_samples(module, ema, cfg, (2,), torch.device("cpu"))
    assert torch.allclose(x_chunked, x_whole, atol=1e-5)
    assert all(torch.equal(p, raw[n]) for n, p in module.named_parameters())  # raw weights restored
    assert module.training

    # independent reference: the shadow weights loaded into the model, sampled directly
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.copy_(ema.shadow[n])
    module.eval()
    sampler = get_sampler("euler_maruyama", nfe=10)
    ref = sampler.sample(module.model, module.model.process, (10, 2), seeds=range(10)).x
    assert torch.allclose(x_whole, ref, atol=1e-5)
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.copy_(raw[n])
    raw_x = sampler.sample(module.model, module.model.process, (10, 2), seeds=range(10)).x
    assert not torch.allclose(x_whole, raw_x, atol=1e-3)


# toy2d with 600 items (570 train) and batch 64: 8 batches per epoch; checkpoints every 5 steps fall mid-epoch
RESUME = ["data.name=toy2d", "data.n=600", "data.batch_size=64", "net.name=mlp", "net.hidden=16", "net.depth=1",
          "net.emb_dim=8", "net.dropout=0.1", "trainer.checkpoint_every_n_steps=5", "trainer.log_every_n_steps=1",
          "trainer.accelerator=cpu", "final_samples.n=0", "optim.warmup_steps=3", "ema.decay=0.9", "evaluation=[]"]


def _weights_and_ema(path: str) -> tuple[dict, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return ck["state_dict"], ck["callbacks"]["EMA"]["shadow"]


def test_cli_resume_mid_epoch_is_exact(tmp_path, capsys):
    """20 steps straight == 10 steps + ckpt_path=last to 20 == resume from the periodic step=5.ckpt to 20, bit for bit
    (weights and EMA). Epochs have 8 batches: step 10 is batch 2 of epoch 1 (a checkpoint written after fit
    stopped), step 5 batch 5 of epoch 0 (written by ModelCheckpoint during the epoch); the resumed epochs continue
    the same shuffled order, and dropout and noise are seeded by the step."""
    straight, split, periodic, pruned = (str(tmp_path / name) for name in ("straight", "split", "periodic", "pruned"))
    keep_all = ["trainer.keep_last_k=null"]
    assert main(RESUME + ["trainer.max_steps=20", f"out_dir={straight}"]) == 0
    assert main(RESUME + keep_all + ["trainer.max_steps=10", f"out_dir={split}"]) == 0
    assert main(RESUME + keep_all + ["trainer.max_steps=20", "trainer.ckpt_path=last", f"out_dir={split}"]) == 0
    step5 = os.path.join(split, "checkpoints", "step=5.ckpt")
    assert main(RESUME + ["trainer.max_steps=20", f"trainer.ckpt_path={step5}", f"out_dir={periodic}"]) == 0
    # pruning across a resume: keep_last_k=1 keeps only the newest periodic checkpoint (and last.ckpt)
    assert main(RESUME + ["trainer.keep_last_k=1", "trainer.max_steps=10", f"out_dir={pruned}"]) == 0
    assert main(RESUME + ["trainer.keep_last_k=1", "trainer.max_steps=20", "trainer.ckpt_path=last",
                          f"out_dir={pruned}"]) == 0
    capsys.readouterr()
    assert sorted(os.listdir(os.path.join(pruned, "checkpoints"))) == ["last.ckpt", "step=20.ckpt"]
    # the default keep_last_k=3 with a checkpoint every 5 steps: steps 10, 15, 20 stay
    assert sorted(os.listdir(os.path.join(straight, "checkpoints"))) == [
        "last.ckpt", "step=10.ckpt", "step=15.ckpt", "step=20.ckpt"]
    w_a, e_a = _weights_and_ema(os.path.join(straight, "checkpoints", "last.ckpt"))
    for other in (split, periodic, pruned):
        w_b, e_b = _weights_and_ema(os.path.join(other, "checkpoints", "last.ckpt"))
        assert w_a.keys() == w_b.keys() and e_a.keys() == e_b.keys()
        assert [k for k in w_a if not torch.equal(w_a[k], w_b[k])] == [], other
        assert [k for k in e_a if not torch.equal(e_a[k], e_b[k])] == [], other
    w_10, _ = _weights_and_ema(os.path.join(split, "checkpoints", "step=10.ckpt"))
    assert not torch.equal(w_10["model.net.out.weight"], w_a["model.net.out.weight"])  # the weights moved


@pytest.mark.slow
def test_cli_resume_mid_epoch_is_exact_under_ddp(tmp_path):
    """The same under 2 CPU ranks (python train.py, ddp, gloo): each rank's shard (4 batches per epoch) resumes."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("LOCAL_RANK", None)
    ddp = RESUME + ["trainer.devices=2", "trainer.strategy=ddp", "trainer.checkpoint_every_n_steps=3"]

    def run(*extra: str) -> None:
        proc = subprocess.run([sys.executable, "train.py", *ddp, *extra], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    run("trainer.max_steps=10", f"out_dir={straight}")
    run("trainer.max_steps=5", f"out_dir={split}")
    run("trainer.max_steps=10", "trainer.ckpt_path=last", f"out_dir={split}")
    w_a, e_a = _weights_and_ema(os.path.join(straight, "checkpoints", "last.ckpt"))
    w_b, e_b = _weights_and_ema(os.path.join(split, "checkpoints", "last.ckpt"))
    assert [k for k in w_a if not torch.equal(w_a[k], w_b[k])] == []
    assert [k for k in e_a if not torch.equal(e_a[k], e_b[k])] == []
