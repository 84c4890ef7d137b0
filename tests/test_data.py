"""Data sets and the data module: shapes, ranges, geometry against closed forms, safe loading, errors."""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import lightning.pytorch as pl
import torch
from PIL import Image

from fastdiff.data import (
    CIFAR10,
    Digits,
    DiffusionDataModule,
    ImageFolder,
    Toy2D,
    get_dataset,
    load_cifar_batch,
    rings_mixture,
)
from fastdiff.registry import DATASETS

SHAPES = ["rings", "checkerboard", "swissroll", "moons"]


# ------------------------------------------------------------------------------------- toy2d


@pytest.mark.parametrize("shape", SHAPES)
def test_toy2d_shape_and_unit_normalisation(shape: str) -> None:
    ds = Toy2D(shape=shape, n=20000, seed=1)
    assert ds.kind == "vector" and ds.data_shape == (2,) and len(ds) == 20000
    assert ds[0].shape == (2,) and ds[0].dtype == torch.float32
    x = ds.data.double()
    # documented: centred, average per-coordinate variance 1 + noise^2
    assert x.mean(0).abs().max() < 0.05
    assert abs(x.var(0).mean().item() - (1 + ds.noise**2)) < 0.05


@pytest.mark.parametrize("shape", SHAPES)
def test_toy2d_deterministic_from_seed(shape: str) -> None:
    a, b, c = Toy2D(shape=shape, n=500, seed=3), Toy2D(shape=shape, n=500, seed=3), Toy2D(shape=shape, n=500, seed=4)
    assert torch.equal(a.data, b.data)
    assert not torch.allclose(a.data, c.data)


def test_rings_mixture_parameters() -> None:
    w, mu, cov = rings_mixture(noise=0.2)
    assert torch.allclose(w, torch.full((8,), 0.125, dtype=torch.float64)) and abs(w.sum().item() - 1) < 1e-12
    assert torch.allclose(mu.norm(dim=1), torch.full((8,), math.sqrt(2), dtype=torch.float64))
    angles = torch.atan2(mu[:, 1], mu[:, 0]) % (2 * math.pi)
    assert torch.allclose(angles.sort().values, torch.arange(8, dtype=torch.float64) * math.pi / 4, atol=1e-12)
    assert torch.allclose(cov, 0.04 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2))


def test_rings_samples_follow_the_exact_mixture() -> None:
    s = 0.1
    x = Toy2D(shape="rings", n=20000, seed=0, noise=s).data.double()
    _, mu, _ = rings_mixture(noise=s)
    d2 = torch.cdist(x, mu) ** 2
    k = d2.argmin(1)
    freq = torch.bincount(k, minlength=8).double() / len(x)
    assert (freq - 0.125).abs().max() < 0.012  # sd ~0.0023
    # |x - mu_k|^2 / s^2 ~ chi^2 with 2 dof: mean 2, P(<= 2) = 1 - exp(-1)
    q = d2.gather(1, k[:, None]).squeeze(1) / s**2
    assert abs(q.mean().item() - 2.0) < 0.08
    assert abs((q <= 2.0).double().mean().item() - (1 - math.exp(-1))) < 0.015


def test_checkerboard_points_lie_on_black_cells() -> None:
    x = Toy2D(shape="checkerboard", n=5000, seed=0, noise=0.0).data.double()
    cell = torch.floor(x / (math.sqrt(3) / 2)) + 2  # board [-2, 2]^2 scaled by sqrt(3)/2
    assert cell.min() >= 0 and cell.max() <= 3
    assert torch.all((cell[:, 0] + cell[:, 1]) % 2 == 0)


def test_moons_points_lie_on_the_two_half_circles() -> None:
    x = Toy2D(shape="moons", n=4000, seed=0, noise=0.0).data.double()
    # closed form: mean (1/2, 1/4), var_x = 3/4, var_y = 9/16 - 1/pi, one scalar scale
    s = math.sqrt((0.75 + 0.5625 - 1 / math.pi) / 2)
    p = x * s + torch.tensor([0.5, 0.25], dtype=torch.float64)
    r_outer = p.norm(dim=1)
    r_inner = (p - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1)
    on_outer = (r_outer - 1).abs() < 1e-5
    on_inner = (r_inner - 1).abs() < 1e-5
    assert torch.all(on_outer | on_inner)
    assert torch.all(p[on_outer, 1] >= -1e-6) and torch.all(p[on_inner, 1] <= 0.5 + 1e-6)
    assert abs(on_outer.double().mean().item() - 0.5) < 0.05


def test_swissroll_points_lie_on_the_spiral() -> None:
    x = Toy2D(shape="swissroll", n=4000, seed=0, noise=0.0).data.double()
    # moments of (t cos t, t sin t), t ~ U[1.5 pi, 4.5 pi], by fine midpoint quadrature
    a, b, m = 1.5 * np.pi, 4.5 * np.pi, 2_000_000
    t = a + (b - a) * (np.arange(m) + 0.5) / m
    cx, cy = t * np.cos(t), t * np.sin(t)
    mx, my = cx.mean(), cy.mean()
    s = math.sqrt(((cx - mx) ** 2).mean() / 2 + ((cy - my) ** 2).mean() / 2)
    p = x * s + torch.tensor([mx, my], dtype=torch.float64)
    r = p.norm(dim=1)
    assert r.min() > a - 1e-3 and r.max() < b + 1e-3
    phase = (torch.atan2(p[:, 1], p[:, 0]) - r) / (2 * math.pi)
    assert torch.all((phase - phase.round()).abs() < 1e-4)


def test_toy2d_bad_options() -> None:
    with pytest.raises(ValueError, match="allowed: rings, checkerboard, swissroll, moons"):
        Toy2D(shape="spiral")
    with pytest.raises(ValueError, match="positive int"):
        Toy2D(n=0)
    with pytest.raises(ValueError, match="noise"):
        Toy2D(noise=-0.1)


# ------------------------------------------------------------------------------------ digits


def test_digits_all_exact_range_and_values() -> None:
    from sklearn.datasets import load_digits

    ds = Digits(split="all")
    assert len(ds) == 1797 and ds.kind == "image" and ds.data_shape == (1, 8, 8)
    assert ds[0].shape == (1, 8, 8) and ds[0].dtype == torch.float32
    assert ds.data.min().item() == -1.0 and ds.data.max().item() == 1.0
    ref = torch.as_tensor(load_digits().images, dtype=torch.float32) / 8.0 - 1.0
    assert torch.equal(ds.data[:, 0], ref)


def test_digits_splits_partition_all() -> None:
    all_, train, val = Digits(split="all"), Digits(split="train"), Digits(split="val")
    assert len(train) + len(val) == 1797 and len(val) == 180
    assert torch.equal(torch.cat([train.data, val.data]), all_.data)


def test_digits_pad_to() -> None:
    base, big = Digits(split="all"), Digits(split="all", pad_to=16)
    assert big.data_shape == (1, 16, 16) and big[0].shape == (1, 16, 16)
    assert torch.equal(big.data[:, :, 4:12, 4:12], base.data)
    border = big.data.clone()
    border[:, :, 4:12, 4:12] = -1.0
    assert torch.all(border == -1.0)
    assert Digits(pad_to=11).data_shape == (1, 11, 11)
    with pytest.raises(ValueError, match="pad_to"):
        Digits(pad_to=7)
    with pytest.raises(ValueError, match="allowed: train, val, all"):
        Digits(split="test")


# ------------------------------------------------------------------------------ image folder


def _write_images(root: Path) -> None:
    stripes = np.zeros((32, 64, 3), np.uint8)  # H=32, W=64: red | green (centre 32 columns) | blue
    stripes[:, :16, 0] = 255
    stripes[:, 16:48, 1] = 255
    stripes[:, 48:, 2] = 255
    Image.fromarray(stripes).save(root / "a_stripes.png")
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(np.full((20, 20), 51, np.uint8), mode="L").save(root / "sub" / "deeper" / "b_gray.PNG")
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(root / "sub" / "c_white.png")
    (root / "notes.txt").write_text("not an image")


def test_image_folder_crop_resize_and_range(tmp_path: Path) -> None:
    _write_images(tmp_path)
    ds = ImageFolder(tmp_path, image_size=16)
    assert len(ds) == 3 and ds.kind == "image" and ds.data_shape == (3, 16, 16)
    assert [f.name for f in ds.files] == ["a_stripes.png", "c_white.png", "b_gray.PNG"]  # sorted full paths
    items = [ds[i] for i in range(3)]
    for x in items:
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
    # centre crop of the stripes keeps only the green columns
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 16, 16)
    assert torch.allclose(items[0], green, atol=1e-6)
    assert torch.allclose(items[1], torch.ones(3, 16, 16))
    assert torch.allclose(items[2], torch.full((3, 16, 16), 51 / 127.5 - 1), atol=1e-6)
    gray = ImageFolder(tmp_path, image_size=8, channels=1, extensions=("png",))
    assert gray.data_shape == (1, 8, 8) and gray[2].shape == (1, 8, 8)
    assert torch.allclose(gray[2], torch.full((1, 8, 8), 51 / 127.5 - 1), atol=1e-6)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="no images with extensions .jpeg, .jpg, .png"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="channels must be 1"):
        ImageFolder(tmp_path, channels=2)


# ----------------------------------------------------------------------------------- CIFAR-10


def _fake_cifar(folder: Path, n: int = 4, protocol: int = 2) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[0, 0], data[0, 1] = 0, 255
        blob = pickle.dumps({b"batch_label": b"fake", b"data": data, b"labels": list(range(n))}, protocol=protocol)
        if protocol == 2:  # the real batches name numpy < 2's module (text GLOBAL opcode, safe to rename)
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(blob)
        arrays[name] = data
    return arrays


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_fake_batches(tmp_path: Path, protocol: int) -> None:
    arrays = _fake_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    train = CIFAR10(tmp_path, split="train")  # parent of the batches folder
    test = CIFAR10(tmp_path / "cifar-10-batches-py", split="test")  # the folder itself
    assert len(train) == 20 and len(test) == 4
    assert train.kind == "image" and train.data_shape == (3, 32, 32)
    x = train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    ref = torch.from_numpy(arrays["data_batch_2"][1].reshape(3, 32, 32).astype(np.float64) / 127.5 - 1)
    assert torch.allclose(x.double(), ref, atol=1e-6)
    assert train[0].min().item() == -1.0 and train[0].max().item() == 1.0
    assert torch.equal(train.labels, torch.arange(4).repeat(5))


def test_cifar10_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_batch_1.*data_batch_5") as err:
        CIFAR10(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="allowed: train, test"):
        CIFAR10(tmp_path, split="val")


class _Evil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (self.cmd,))


def test_cifar10_refuses_code_execution(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _fake_cifar(folder)
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(f"touch {marker}"), b"labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global .*system"):
        CIFAR10(tmp_path, split="test")
    assert not marker.exists()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": eval}, f)  # a bare builtin is refused too
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_cifar_batch(folder / "test_batch")


def test_cifar10_bad_content(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _fake_cifar(folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"uint8 array \[N, 3072\]"):
        CIFAR10(tmp_path, split="test")


# ------------------------------------------------------------------------- registry, module


def test_registry_names_and_errors() -> None:
    assert {"toy2d", "digits", "image_folder", "cifar10"} <= set(DATASETS.names())
    assert len(get_dataset("toy2d", n=10)) == 10
    with pytest.raises(KeyError, match="registered: .*cifar10.*digits.*image_folder.*toy2d"):
        get_dataset("mnist")
    with pytest.raises(TypeError, match="unknown option.*bogus.*allowed: shape, n, seed, noise"):
        get_dataset("toy2d", bogus=1)


def test_datamodule_toy2d_holdout() -> None:
    dm = DiffusionDataModule("toy2d", batch_size=256, n=2000, shape="moons", val_fraction=0.05)
    assert dm.kind == "vector" and dm.data_shape == (2,)
    dm.setup("fit")
    assert len(dm.train_dataset) == 1900 and len(dm.val_dataset) == 100
    train = torch.stack([dm.train_dataset[i] for i in range(len(dm.train_dataset))])
    val = torch.stack([dm.val_dataset[i] for i in range(len(dm.val_dataset))])
    pool = Toy2D(shape="moons", n=2000).data
    rows = {tuple(r) for r in pool.tolist()}
    assert {tuple(r) for r in train.tolist()} | {tuple(r) for r in val.tolist()} == rows
    assert not {tuple(r) for r in train.tolist()} & {tuple(r) for r in val.tolist()}
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 1900 // 256 and all(b.shape == (256, 2) for b in batches)
    assert sum(b.shape[0] for b in dm.val_dataloader()) == 100


def test_datamodule_digits_native_split_and_hflip() -> None:
    dm = DiffusionDataModule("digits", batch_size=64, hflip=True)
    assert dm.kind == "image" and dm.data_shape == (1, 8, 8)
    dm.setup("fit")
    assert len(dm.train_dataset) == 1617 and len(dm.val_dataset) == 180
    assert next(iter(dm.train_dataloader())).shape == (64, 1, 8, 8)
    base = Digits(split="train").data[3]
    assert not torch.equal(base, base.flip(-1))
    draws = [dm.train_dataset[3] for _ in range(64)]
    same = sum(torch.equal(d, base) for d in draws)
    flipped = sum(torch.equal(d, base.flip(-1)) for d in draws)
    assert same + flipped == 64 and same > 10 and flipped > 10
    assert torch.equal(dm.val_dataset[0], Digits(split="val").data[0])  # validation is never flipped


def test_datamodule_errors() -> None:
    with pytest.raises(KeyError, match="registered:"):
        DiffusionDataModule("mnist")
    with pytest.raises(ValueError, match="data.image_szie: unknown option for dataset 'digits'"):
        DiffusionDataModule("digits", image_szie=16)
    with pytest.raises(ValueError, match="data.split: .* chosen by the data module"):
        DiffusionDataModule("digits", split="all")
    with pytest.raises(ValueError, match="hflip applies to image data only"):
        DiffusionDataModule("toy2d", hflip=True)
    with pytest.raises(ValueError, match="val_fraction"):
        DiffusionDataModule("toy2d", val_fraction=1.0)
    dm = DiffusionDataModule("toy2d", n=100, batch_size=128)
    with pytest.raises(ValueError, match="fewer than batch_size 128"):
        dm.setup("fit")



# --------------------------------------------------------------------------- Lightning runs


class _Recorder(pl.LightningModule):
    """Tiny module that saves every training row it sees to <out>/rank<r>.pt (module level for spawn)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.out = out
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.detach().clone())
        return ((batch - self.w) ** 2).mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        assert batch.shape[1:] == (2,)

    def on_train_epoch_end(self) -> None:
        torch.save(torch.cat(self.seen), Path(self.out) / f"rank{self.global_rank}.pt")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(tmp_path: Path, dm: DiffusionDataModule, **trainer_kwargs: object) -> None:
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), **trainer_kwargs,
    )
    trainer.fit(_Recorder(str(tmp_path)), datamodule=dm)


def _train_rows(dm: DiffusionDataModule) -> set[tuple[float, ...]]:
    dm.setup("fit")
    return {tuple(dm.train_dataset[i].tolist()) for i in range(len(dm.train_dataset))}


def test_datamodule_under_lightning_trainer(tmp_path: Path) -> None:
    dm = DiffusionDataModule("toy2d", batch_size=64, n=600, seed=2)
    _fit(tmp_path, dm, devices=1)
    seen = torch.load(tmp_path / "rank0.pt", weights_only=True)
    assert seen.shape == ((570 // 64) * 64, 2)
    rows = [tuple(r) for r in seen.tolist()]
    assert len(set(rows)) == len(rows) and set(rows) <= _train_rows(dm)


@pytest.mark.slow
def test_datamodule_under_ddp_spawn_shards_the_data(tmp_path: Path) -> None:
    dm = DiffusionDataModule("toy2d", batch_size=64, n=600, seed=2)
    _fit(tmp_path, dm, devices=2, strategy="ddp_spawn")
    r0 = {tuple(r) for r in torch.load(tmp_path / "rank0.pt", weights_only=True).tolist()}
    r1 = {tuple(r) for r in torch.load(tmp_path / "rank1.pt", weights_only=True).tolist()}
    # DistributedSampler: 570 train items -> 285 per rank -> 4 full batches each, disjoint shards
    assert len(r0) == len(r1) == 4 * 64
    assert not r0 & r1 and (r0 | r1) <= _train_rows(dm)
