"""fastdiff.metrics against independent computations (scipy sqrtm, numpy kernels, scipy 1-D Wasserstein)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from scipy.spatial.distance import cdist

from fastdiff.cli.stats import main as stats_main
from fastdiff.metrics import (MMD, ClassifierFeatures, FeatureError, FrechetDistance, InceptionFeatures,
                              KernelDistance, RawFeatures, ReferenceStats, SampleSetMetric, SlicedWasserstein,
                              StatsMismatchError, compute_stats, frechet_distance, kid_subsets, load_stats, mmd_rbf,
                              save_stats, sliced_wasserstein)
from fastdiff.metrics.features import SmallCNN, _digits_labeled, tensor_sha256
from fastdiff.metrics.stats import EvalReferences, parse_metric
from fastdiff.metrics.toy import random_directions, wasserstein_1d


def fd_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of the Gaussians fitted to feature sets a, b with scipy.linalg.sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + shift


# ---- Fréchet distance ------------------------------------------------------------------------------------------
def test_frechet_distance_matches_scipy_sqrtm() -> None:
    a, b = features(500, 12, 0), features(400, 12, 1, shift=0.3)
    metric = FrechetDistance(*_mean_cov(a))
    for chunk in b.split(37):  # streamed in uneven chunks
        metric.update(chunk)
    want = fd_scipy(a.numpy(), b.numpy())
    assert float(metric.compute()) == pytest.approx(want, rel=1e-8)
    assert float(frechet_distance(*_mean_cov(a), *_mean_cov(b))) == pytest.approx(want, rel=1e-8)


def _mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.from_numpy(np.cov(x.numpy(), rowvar=False))


def test_frechet_identical_sets_is_zero_and_gaussian_closed_form() -> None:
    a = features(300, 8, 2)
    metric = FrechetDistance(*_mean_cov(a))
    metric.update(a)
    assert abs(float(metric.compute())) < 1e-9
    # N(m, s1^2 I) vs N(0, s2^2 I) in d dims: |m|^2 + d (s1 - s2)^2
    d, m = 5, torch.full((5,), 0.5, dtype=torch.float64)
    val = frechet_distance(m, 4 * torch.eye(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64),
                           torch.eye(d, dtype=torch.float64))
    assert float(val) == pytest.approx(d * 0.25 + d * 1.0, rel=1e-12)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_singular_covariance_matches_scipy() -> None:
    """Rank-deficient features (post-ReLU features often are): still the scipy value."""
    a = features(200, 10, 3).clamp_min(0)
    a[:, 0] = 0.0
    b = features(150, 10, 4).clamp_min(0)
    b[:, 0] = 0.0
    assert float(frechet_distance(*_mean_cov(a), *_mean_cov(b))) == pytest.approx(fd_scipy(a.numpy(), b.numpy()),
                                                                                  rel=1e-6, abs=1e-8)


# ---- KID / MMD / sliced Wasserstein ----------------------------------------------------------------------------
def mmd2_unbiased_numpy(x: np.ndarray, y: np.ndarray, kernel) -> float:  # type: ignore[no-untyped-def]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def test_kid_full_subset_matches_numpy() -> None:
    x, y = features(60, 6, 5), features(60, 6, 6, shift=0.2)
    poly = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    mean, _ = kid_subsets(x, y, n_subsets=1, subset_size=60)  # a full-size subset is a permutation
    assert float(mean) == pytest.approx(mmd2_unbiased_numpy(x.numpy(), y.numpy(), poly), rel=1e-9)
    metric = KernelDistance(x, n_subsets=1, subset_size=60)
    metric.update(y[:25], range(25))
    metric.update(y[25:], range(25, 60))
    assert float(metric.compute()) == pytest.approx(float(mean), rel=1e-12)


def test_mmd_rbf_matches_numpy() -> None:
    x, y = features(50, 2, 7), features(70, 2, 8, shift=0.5)
    bws = (0.2, 1.0)
    rbf = lambda a, b: sum(np.exp(-cdist(a, b, "sqeuclidean") / (2 * s * s)) for s in bws)  # noqa: E731
    want = mmd2_unbiased_numpy(x.numpy(), y.numpy(), rbf)
    assert float(mmd_rbf(x, y, bws)) == pytest.approx(want, rel=1e-9)
    metric = MMD(y, bandwidths=bws)
    metric.update(x, range(50))
    assert float(metric.compute()) == pytest.approx(want, rel=1e-9)


def test_wasserstein_1d_matches_scipy_for_unequal_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(37, generator=g, dtype=torch.float64), 2 * torch.randn(53, generator=g, dtype=torch.float64)
    assert float(wasserstein_1d(u, v, p=1)) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-10)
    a, w = torch.randn(40, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64)
    # equal sizes, p = 2: the sorted (monotone) coupling
    assert float(wasserstein_1d(a, w, p=2)) == pytest.approx(float(((a.sort().values - w.sort().values) ** 2).mean()))


def test_sliced_wasserstein_matches_scipy_projections() -> None:
    x, y = features(80, 2, 9), features(120, 2, 10, shift=1.0)
    w = random_directions(2, 16, seed=3).numpy()
    want = np.mean([scipy.stats.wasserstein_distance(x.numpy() @ d, y.numpy() @ d) for d in w])
    assert float(sliced_wasserstein(x, y, n_proj=16, p=1, seed=3)) == pytest.approx(want, rel=1e-10)
    assert float(sliced_wasserstein(x, x, n_proj=16)) == 0.0
    metric = SlicedWasserstein(y, n_proj=16, p=1, seed=3)
    metric.update(x, range(80))
    assert float(metric.compute()) == pytest.approx(want, rel=1e-10)


def test_sample_set_metric_orders_by_seed() -> None:
    m = SampleSetMetric(num_features=2)
    x = torch.arange(10, dtype=torch.float64).reshape(5, 2)
    m.update(x[3:], [3, 4])
    m.update(x[:3], [0, 1, 2])
    assert torch.equal(m.samples(), x)
    with pytest.raises(ValueError, match="3 feature rows but 2 seeds"):
        m.update(x[:3], [0, 1])


# ---- features --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ClassifierFeatures:
    torch.set_num_threads(1)
    return ClassifierFeatures("digits", cache_dir=str(tmp_path_factory.mktemp("cls")))


def test_classifier_is_accurate_cached_and_checked(classifier: ClassifierFeatures) -> None:
    meta = json.loads(classifier.cache_path.with_suffix(".json").read_text())
    assert meta["val_accuracy"] > 0.85  # held-out digits: the features carry class information
    images, labels = _digits_labeled("val")
    with torch.no_grad():
        acc = float((classifier.logits(images).argmax(1) == labels).float().mean())
    assert acc == pytest.approx(meta["val_accuracy"])
    assert meta["sha256"] == tensor_sha256(classifier.net.state_dict())
    assert meta["sha256"][:16] in classifier.extractor_id
    again = ClassifierFeatures("digits", cache_dir=str(classifier.cache_dir))  # from the cache: same weights
    assert again.extractor_id == classifier.extractor_id
    assert classifier(images[:4]).shape == (4, classifier.num_features)
    with torch.no_grad():  # features scaled to unit mean variance on the training images
        assert float(classifier(_digits_labeled("train")[0]).var(0).mean()) == pytest.approx(1.0, rel=1e-4)
    meta["sha256"] = "0" * 64
    classifier.cache_path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(FeatureError, match="does not match its recorded SHA-256"):
        ClassifierFeatures("digits", cache_dir=str(classifier.cache_dir))


def test_classifier_errors() -> None:
    with pytest.raises(FeatureError, match="labelled data set; available: digits"):
        ClassifierFeatures("toy2d")
    assert SmallCNN(1, 10)(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_inception_error_paths(tmp_path: Path) -> None:
    """Always asserts (it used to assert nothing when torch-fidelity was installed); more in test_fid_inception."""
    with pytest.raises(FeatureError, match="does not exist"):
        InceptionFeatures(weights_path=str(tmp_path / "missing.pth"))
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(FeatureError, match="has 15 bytes, expected 95628359: not pt_inception") as err:
        InceptionFeatures(weights_path=str(fake))
    assert "torch-fidelity" not in str(err.value)


# ---- reference statistics --------------------------------------------------------------------------------------
def test_stats_roundtrip_and_extractor_mismatch(tmp_path: Path) -> None:
    x = features(100, 3, 11).float()
    raw = RawFeatures((3,))
    stats = compute_stats(raw, x, keep_features=10, batch_size=16)
    mu, sigma = _mean_cov(x.double())
    assert torch.allclose(stats.mu, mu) and torch.allclose(stats.sigma, sigma) and stats.n == 100
    path = save_stats(stats, tmp_path / "ref.npz")
    back = load_stats(path, extractor_id="raw-3")
    assert torch.equal(back.mu, stats.mu) and torch.equal(back.features, stats.features) and back.extractor == "raw-3"
    with pytest.raises(StatsMismatchError, match="computed with feature extractor 'raw-3'.*uses 'classifier-x'"):
        load_stats(path, extractor_id="classifier-x")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a fastdiff reference-statistics file"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="python -m fastdiff.cli.stats"):
        load_stats(tmp_path / "none.npz")


def test_eval_references_refuse_stats_of_another_extractor(tmp_path: Path) -> None:
    stats = ReferenceStats(mu=torch.zeros(2, dtype=torch.float64), sigma=torch.eye(2, dtype=torch.float64), n=5,
                           extractor="classifier-digits-1x8x8-0000")
    path = save_stats(stats, tmp_path / "ref.npz")
    refs = EvalReferences(reference={"raw": str(path)})
    with pytest.raises(StatsMismatchError, match="uses 'raw-2'"):
        refs.prepare(["raw_fd"], None, (2,), torch.device("cpu"))
    refs = EvalReferences(reference={"raw": str(save_stats(ReferenceStats(stats.mu, stats.sigma, 5, "raw-2"),
                                                           tmp_path / "ok.npz"))})
    with pytest.raises(ValueError, match="holds no feature rows"):
        refs.prepare(["mmd"], None, (2,), torch.device("cpu"))


def test_parse_metric_rules() -> None:
    assert parse_metric("fd_digits", "image", "digits") == ("frechet", "classifier")
    assert parse_metric("kid", "image") == ("kid", "inception")
    assert parse_metric("sliced_w", "vector") == ("sliced_w", "raw")
    with pytest.raises(ValueError, match="unknown metric 'fidd'; allowed: fid, kid"):
        parse_metric("fidd")
    with pytest.raises(ValueError, match="names data set 'cifar10', but the data set is 'digits'; use fd_digits"):
        parse_metric("fd_cifar10", "image", "digits")
    with pytest.raises(ValueError, match="needs image data"):
        parse_metric("fid", "vector")
    with pytest.raises(ValueError, match="for vector data"):
        parse_metric("mmd", "image")


def test_stats_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "toy.npz"
    assert stats_main(["--data", "toy2d", "--data-option", "n=300", "--features", "raw", "--out", str(out),
                       "--keep-features", "50"]) == 0
    st = load_stats(out, "raw-2")
    assert st.n == 300 and st.features.shape == (50, 2) and "wrote" in capsys.readouterr().out
    from fastdiff.data import Toy2D

    mu, sigma = _mean_cov(Toy2D(n=300).data.double())
    assert torch.allclose(st.mu, mu) and torch.allclose(st.sigma, sigma)
    assert stats_main(["--data", "toy2d", "--features", "inception", "--out", str(tmp_path / "x.npz")]) == 2
    assert "--features inception needs images" in capsys.readouterr().err
    assert stats_main(["--data", "toy2d", "--data-option", "shape=star", "--features", "raw",
                       "--out", str(tmp_path / "x.npz")]) == 2
    assert "error:" in capsys.readouterr().err
