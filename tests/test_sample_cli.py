"""sample.py end to end: files under their seeds (npz shards / PNG), equality with direct sampling, resume after a
crash, Fréchet distance against an independent formula, one-line errors, and 1 vs 2 DDP processes (gloo)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from fastdiff.cli.sample import main

REPO = Path(__file__).resolve().parents[1]
TOY = ["data.name=toy2d", "data.n=256", "data.batch_size=32", "net.name=mlp", "net.hidden=32", "net.depth=1",
       "net.emb_dim=16"]
DIGITS = ["data.batch_size=16", "net.channels=8", "net.channel_mult=[1]", "net.attn_resolutions=[]"]
COMMON = ["trainer.max_steps=3", "trainer.accelerator=cpu", "trainer.checkpoint_every_n_steps=3",
          "final_samples.n=0", "optim.warmup_steps=1", "evaluation=[]"]


def _train(out: Path, args: list[str]) -> str:
    """A few steps through the real training path (fastdiff.cli.train); returns the checkpoint path."""
    from fastdiff.cli.train import main as train_main

    assert train_main(args + COMMON + [f"out_dir={out}"]) == 0
    return str(out / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpts")
    out = {"toy": _train(root / "toy", TOY), "digits": _train(root / "digits", DIGITS)}
    # a PSLD checkpoint (only its process matters): built directly in the checkpoint layout DiffusionModule writes
    from fastdiff.config import load_config
    from fastdiff.lightning.module import DiffusionModule

    cfg = load_config(None, TOY + ["process.name=psld"])
    module = DiffusionModule(cfg, (2,))
    out["psld"] = str(root / "psld.ckpt")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, out["psld"])
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, dict]:
    code = main(argv + ["progress=false", "trainer.accelerator=cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    out = next(a.split("=", 1)[1] for a in argv if a.startswith("out="))
    summary = json.loads((Path(out) / "summary.json").read_text()) if code == 0 else {}
    return code, lines[-1] if lines else "", summary


def _direct(ckpt: str, sampler: str, nfe: int, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent computation: the EMA model sampled in one batch, outside Lightning."""
    from fastdiff.lightning.checkpoint import load_score_model
    from fastdiff.samplers import get_sampler

    model = load_score_model(ckpt)
    shape = tuple(torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_shape"])
    res = get_sampler(sampler, nfe=nfe).sample(model, model.process, (len(seeds), *shape), seeds=seeds)
    return res.x, res.nfe_per_sample


def _frechet(feats: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Fréchet distance (Heusel et al. 2017) with scipy's matrix square root, as in pytorch-fid."""
    m, s = feats.mean(0), np.cov(feats, rowvar=False)
    covmean = scipy.linalg.sqrtm(s @ sigma).real
    return float(((m - mu) ** 2).sum() + np.trace(s) + np.trace(sigma) - 2 * np.trace(covmean))


def _ref_stats(path: Path, dim: int, extractor: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from fastdiff.metrics.stats import ReferenceStats, save_stats

    g = np.random.default_rng(seed)
    a = g.normal(size=(dim, dim)) / math.sqrt(dim)
    mu, sigma = g.normal(size=dim) * 0.3, a @ a.T + 0.1 * np.eye(dim)
    save_stats(ReferenceStats(mu=torch.tensor(mu), sigma=torch.tensor(sigma), n=1000, extractor=extractor), path)
    return mu, sigma


def _expected_batches(n: int, batch: int, world: int) -> list[int]:
    """Batch sizes of EDM's split, written out independently: ceil(n / (batch*world))*world near-equal chunks."""
    k = math.ceil(n / (batch * world)) * world
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def test_vector_shards_equal_direct_sampling_resume_and_fid(ckpts, tmp_path, capsys):
    out = tmp_path / "toy"
    mu, sigma = _ref_stats(tmp_path / "ref.npz", 2, "raw-2")
    argv = [f"ckpt={ckpts['toy']}", "sampler=euler_maruyama", "nfe=6", "seeds=0-20", f"out={out}", "batch=4",
            f"fid.ref={tmp_path / 'ref.npz'}"]
    code, line, summary = _run(argv, capsys)
    assert code == 0
    x_direct, nfe_direct = _direct(ckpts["toy"], "euler_maruyama", 6, list(range(21)))
    assert line.startswith("sample: 21 samples (21 generated, 0 already there) | NFE/sample mean 6 max 6 | ")
    assert summary["samples"] == 21 and summary["nfe_mean"] == float(nfe_direct.double().mean()) == 6.0
    assert summary["nfe_max"] == 6 and summary["samples_per_s"] > 0 and summary["world_size"] == 1

    sizes, first, names = _expected_batches(21, 4, 1), 0, set()
    for size in sizes:
        names.add(f"shard_{first:06d}-{first + size - 1:06d}.npz")
        first += size
    assert {p.name for p in out.glob("shard_*.npz")} == names

    from fastdiff.lightning.callbacks.writer import load_samples

    seeds, x = load_samples(out)
    assert seeds == list(range(21)) and x.dtype == torch.float32
    assert torch.equal(x, x_direct)  # bit-identical to one-batch sampling outside Lightning
    fd = _frechet(x.double().numpy(), mu, sigma)
    assert summary["fid"]["metric"] == "raw_fd" and summary["fid"]["value"] == pytest.approx(fd, rel=1e-6)
    assert f"| raw_fd {summary['fid']['value']:.6g} |" in line

    # crash simulation: two shards lost, a stale temporary file left; resume with another batch size
    (out / "shard_000004-000007.npz").unlink()
    (out / "shard_000015-000017.npz").unlink()
    (out / ".shard_000018-000020.npz.tmp-12345").write_bytes(b"partial")
    code, line, summary = _run(argv[:-2] + ["batch=7", argv[-1]], capsys)
    assert code == 0 and summary["generated"] == 7 and summary["skipped"] == 14 and summary["samples"] == 21
    assert not list(out.glob(".*tmp*"))
    all_seeds = []
    for p in out.glob("shard_*.npz"):
        with np.load(p) as z:
            all_seeds += z["seeds"].tolist()
    assert sorted(all_seeds) == list(range(21))  # every seed exactly once
    seeds2, x2 = load_samples(out)
    assert seeds2 == seeds and torch.equal(x2, x)
    assert summary["fid"]["value"] == pytest.approx(fd, rel=1e-9)  # skipped seeds enter the FID from their files

    code, line, summary = _run(argv, capsys)  # nothing left to do
    assert code == 0 and summary["generated"] == 0 and summary["skipped"] == 21 and summary["nfe_mean"] is None

    # the same directory with another sampler budget is refused, not mixed
    assert main(argv[:1] + ["sampler=euler_maruyama", "nfe=8"] + argv[3:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: out: {out} holds samples of a different generation "
                              "(sampler.steps: 5 there, 7 now)")


@pytest.fixture(scope="module")
def digits_run(ckpts, tmp_path_factory):
    """One single-process PNG run (seeds cross a 1000-folder boundary) with a raw-feature FID."""
    root = tmp_path_factory.mktemp("digits")
    ref = root / "ref.npz"
    mu, sigma = _ref_stats(ref, 64, "raw-1x8x8", seed=1)
    argv = [f"ckpt={ckpts['digits']}", "sampler=euler_maruyama", "nfe=4", "seeds=995-1006", f"out={root / 'one'}",
            "batch=5", f"fid.ref={ref}"]
    assert main(argv + ["progress=false", "trainer.accelerator=cpu"]) == 0
    return {"argv": argv, "out": root / "one", "ref": ref, "mu": mu, "sigma": sigma, "root": root}


def _png_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.png"))}


def test_png_layout_values_and_resume(ckpts, digits_run, capsys):
    from PIL import Image

    out = digits_run["out"]
    files = _png_bytes(out)
    assert sorted(files) == [f"000000/000{s}.png" for s in range(995, 1000)] + \
        [f"001000/00{s}.png" for s in range(1000, 1007)]
    x_direct, _ = _direct(ckpts["digits"], "euler_maruyama", 4, list(range(995, 1007)))
    expect = ((x_direct.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [N, 1, 8, 8]
    for i, s in enumerate(range(995, 1007)):
        with Image.open(out / f"{s - s % 1000:06d}" / f"{s:06d}.png") as im:
            assert im.mode == "L" and im.size == (8, 8)
            assert np.array_equal(np.asarray(im), expect[i, 0].numpy())
    summary = json.loads((out / "summary.json").read_text())
    feats = expect.reshape(12, -1).double().numpy() / 127.5 - 1  # raw features of the images as stored
    assert summary["fid"]["value"] == pytest.approx(_frechet(feats, digits_run["mu"], digits_run["sigma"]), rel=1e-6)

    for s in (996, 999, 1000, 1005):
        (out / f"{s - s % 1000:06d}" / f"{s:06d}.png").unlink()
    code, line, again = _run(digits_run["argv"][:-2] + ["batch=2", digits_run["argv"][-1]], capsys)
    assert code == 0 and again["generated"] == 4 and again["skipped"] == 8
    assert _png_bytes(out) == files  # the identical final set
    assert again["fid"]["value"] == pytest.approx(summary["fid"]["value"], rel=1e-9)


class FailOnSeed:
    """Wraps a sampler: every batch containing ``seed`` raises SamplingNaNError for that seed."""

    def __init__(self, inner, seed: int) -> None:
        self.inner, self.seed = inner, seed

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sample(self, score_fn, process, shape, seeds=None, **kw):
        from fastdiff.samplers import SamplingNaNError

        seeds = list(seeds)
        if self.seed in seeds:
            raise SamplingNaNError(self.inner.name, [self.seed])
        return self.inner.sample(score_fn, process, shape, seeds=seeds, **kw)


def test_failed_seeds_are_reported_then_filled_by_a_rerun(ckpts, tmp_path, capsys, monkeypatch):
    import fastdiff.cli.sample as cli
    from fastdiff.lightning.callbacks.writer import load_samples

    real = cli.build_sampler
    monkeypatch.setattr(cli, "build_sampler", lambda args: FailOnSeed(real(args), 7))
    argv = [f"ckpt={ckpts['toy']}", "sampler=ode_euler", "nfe=4", "seeds=0-11", f"out={tmp_path / 'o'}", "batch=5"]
    code, line, _ = _run(argv, capsys)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert code == 1 and summary["failed"] == 1 and summary["failed_seeds"] == [7] and summary["generated"] == 11
    assert "1 seed(s) FAILED (NaN/inf): [7]" in line
    seeds, x = load_samples(tmp_path / "o")
    assert seeds == [s for s in range(12) if s != 7]
    x_direct, _ = _direct(ckpts["toy"], "ode_euler", 4, list(range(12)))
    assert torch.equal(x, x_direct[[s for s in range(12) if s != 7]])  # the batch-mates of seed 7 are unaffected

    monkeypatch.setattr(cli, "build_sampler", real)
    code, line, summary = _run(argv, capsys)
    assert code == 0 and summary["generated"] == 1 and summary["skipped"] == 11
    seeds, x = load_samples(tmp_path / "o")
    assert seeds == list(range(12)) and torch.equal(x, x_direct)


def test_empty_batches_when_seeds_are_fewer_than_ranks(ckpts, tmp_path):
    """With 1 seed and 2 ranks, rank 1 gets one empty batch: its predict_step returns nothing to write."""
    from fastdiff.lightning.callbacks.writer import SampleStore
    from fastdiff.lightning.generate import GenerateModule, SeedBatches
    from fastdiff.lightning.checkpoint import load_score_model
    from fastdiff.samplers import get_sampler
    from fastdiff.seeds import rank_batches

    assert rank_batches([3], 4, 2, 1) == [[]]
    items = SeedBatches(rank_batches([3], 4, 2, 1), finished=set())
    assert len(items) == 1 and items[0] == {"seeds": [], "skipped": []}
    module = GenerateModule(load_score_model(ckpts["toy"]), get_sampler("ode_euler", nfe=4), [3], 4,
                            SampleStore(tmp_path, (2,)))
    out = module.predict_step(items[0], 0)
    assert out["seeds"] == [] and out["x"].numel() == 0 and out["failed"] == []
    assert SeedBatches([[1, 2, 3]], finished={2}).items == [{"seeds": [1, 3], "skipped": [2]}]


@pytest.mark.parametrize("case", ["missing", "corrupt", "truncated", "process", "not_dir", "under_file", "seeds",
                                  "sampler", "nfe", "key", "trainer_key", "option", "fid_ref", "no_nfe"])
def test_one_line_errors(case, ckpts, tmp_path, capsys):
    (tmp_path / "junk.ckpt").write_text("this is not a checkpoint\n" * 20)
    toy = Path(ckpts["toy"]).read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(toy[:len(toy) // 2])
    (tmp_path / "file").write_text("x")
    base = {"ckpt": ckpts["toy"], "sampler": "euler_maruyama", "nfe": "6", "seeds": "0-9", "out": str(tmp_path / "o")}
    extra: list[str] = []
    change, message = {
        "missing": ({"ckpt": str(tmp_path / "nope.ckpt")}, f"ckpt: checkpoint not found: {tmp_path / 'nope.ckpt'}"),
        "corrupt": ({"ckpt": str(tmp_path / "junk.ckpt")},
                    f"ckpt: {tmp_path / 'junk.ckpt'} is not a torch checkpoint: unrecognised content"),
        "truncated": ({"ckpt": str(tmp_path / "cut.ckpt")},
                      f"ckpt: {tmp_path / 'cut.ckpt'} is truncated or corrupt: a zip archive"),
        "process": ({"ckpt": ckpts["psld"], "sampler": "edm_heun"},
                    "sampler: sampler 'edm_heun' does not support process PSLD — it supports: "),
        "not_dir": ({"out": str(tmp_path / "file")}, f"out: {tmp_path / 'file'} exists and is not a directory"),
        "under_file": ({"out": str(tmp_path / "file" / "sub")}, f"out: cannot write to {tmp_path / 'file' / 'sub'}"),
        "seeds": ({"seeds": "9-3"}, "seeds: range 9-3 in '9-3' ends below its start — write it as 3-9"),
        "sampler": ({"sampler": "nope"}, "sampler: unknown sampler 'nope' — registered: "),
        "nfe": ({"sampler": "restart", "nfe": "5"}, "sampler 'restart': NFE budget 5 is below its minimum 11"),
        "key": ({"nfee": "5"}, "nfee: unknown key — allowed: ckpt, sampler, seeds, out, nfe,"),
        "trainer_key": ({"trainer.max_steps": "5"}, "trainer.max_steps: unknown key — allowed: accelerator,"),
        "option": ({"options.foo": "1"}, "unknown option(s) foo for sampler 'euler_maruyama'"),
        "fid_ref": ({"fid.ref": str(tmp_path / "none.npz")}, f"fid.ref: reference statistics {tmp_path / 'none.npz'} "),
        "no_nfe": ({"nfe": None}, "nfe: required for sampler 'euler_maruyama'"),
    }[case]
    args = {**base, **change}
    argv = [f"{k}={v}" for k, v in args.items() if v is not None] + extra + ["ema=false"]
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: " + message), err
    if case in ("missing", "corrupt", "truncated", "process", "seeds", "sampler", "nfe", "key"):
        assert not (tmp_path / "o").exists()  # found before anything was created


def test_checkpoint_is_read_once(ckpts, tmp_path, capsys, monkeypatch):
    """sample.py and fastdiff.sample(path) torch.load the checkpoint once (the model carries config and data shape)."""
    import fastdiff

    real_load, reads = torch.load, []

    def counting_load(f, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    code, _, summary = _run([f"ckpt={ckpts['toy']}", "sampler=ode_euler", "nfe=2", "seeds=0-3",
                             f"out={tmp_path / 'o'}"], capsys)
    assert code == 0 and summary["samples"] == 4
    assert reads.count(ckpts["toy"]) == 1, reads
    reads.clear()
    res = fastdiff.sample(ckpts["toy"], "ode_euler", nfe=2, seeds=range(3))
    assert res.x.shape == (3, 2) and reads == [ckpts["toy"]]


def test_ddp_two_processes_match_one(digits_run, tmp_path):
    """2 gloo processes (batch 3) write byte-identical PNGs to 1 process (batch 5); the FID sums are reduced."""
    out = tmp_path / "two"
    argv = [a if not a.startswith("out=") else f"out={out}" for a in digits_run["argv"]]
    argv = [a if a != "batch=5" else "batch=3" for a in argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "sample.py"), *argv, "progress=false", "trainer.devices=2",
                           "trainer.strategy=ddp", "trainer.accelerator=cpu"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("sample: ")]
    assert len(lines) == 1 and lines[0].startswith("sample: 12 samples (12 generated, 0 already there)")
    two = json.loads((out / "summary.json").read_text())
    one = json.loads((digits_run["out"] / "summary.json").read_text())
    assert two["world_size"] == 2 and two["samples"] == 12
    assert _png_bytes(out) == _png_bytes(digits_run["out"])
    assert two["fid"]["value"] == pytest.approx(one["fid"]["value"], rel=1e-9)
