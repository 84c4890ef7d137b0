"""Feature extractors for distribution metrics (registered in FEATURES): ``raw``, ``classifier``, ``inception``.

Every extractor maps data-space samples (images in [-1, 1] as [N, C, H, W], or vectors [N, d]) to features
[N, F] and has an ``extractor_id`` that reference statistics record, so stats from another extractor are refused.

- ``raw``: the flattened samples.
- ``classifier``: penultimate activations of a small CNN trained on the data set's labels (digits: a few seconds
  on one CPU thread, seed 0), scaled to unit mean variance per dimension on the training images. Weights are
  cached under ``cache_dir`` (default ``$FASTDIFF_CACHE`` or ``~/.cache/fastdiff``) with the SHA-256 of their
  tensors in a JSON sidecar, checked on load; the id includes that hash. Its Fréchet distance is logged as ``fd_<dataset>``, never as FID.
- ``inception``: the standard FID network (pool3, 2048 features) through torch-fidelity, which is optional: a clear
  error says how to install it. ``weights_path`` points at a local pt_inception-2015-12-05-6726825d.pth; its SHA-256
  must start with 6726825d (the torch.hub convention for that file name) or equal ``sha256`` when given.
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

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"
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


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
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
def check_inception_weights(path: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """The weights file exists and its SHA-256 equals ``sha256`` (or starts with the prefix in the official name)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FeatureError(f"inception weights_path {p} does not exist; download {INCEPTION_FILE} "
                           "(github.com/mseitzer/pytorch-fid releases) and point weights_path at it")
    digest = file_sha256(p)
    ok = digest == sha256.lower() if sha256 else digest.startswith(INCEPTION_SHA256_PREFIX)
    if not ok:
        want = sha256 or f"{INCEPTION_SHA256_PREFIX}..."
        raise FeatureError(f"inception weights {p} have SHA-256 {digest}, expected {want}: not the standard "
                           f"{INCEPTION_FILE} (FID values would not be comparable)")
    return p


@FEATURES.register("inception")
class InceptionFeatures(FeatureExtractor):
    """Standard FID features: Inception-v3 pool3 (2048-d) via torch-fidelity, uint8 RGB input resized to 299."""

    def __init__(self, weights_path: str | None = None, sha256: str | None = None) -> None:
        super().__init__()
        path = None
        if weights_path is not None:
            path = check_inception_weights(weights_path, sha256)
        else:
            hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
            path = check_inception_weights(hub, sha256) if hub.is_file() else None
        try:
            import torch_fidelity  # noqa: F401
        except ImportError as err:
            raise FeatureError("inception features need torch-fidelity, which is not installed (pip install "
                               "torch-fidelity; it needs torchvision); or use 'classifier' / 'raw' features") from err
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=str(path) if path else None)
        except Exception as err:  # noqa: BLE001 - download failures come in many types
            raise FeatureError(f"could not load the Inception weights ({type(err).__name__}: {err}); offline, pass "
                               f"weights_path=/path/to/{INCEPTION_FILE}") from err
        self.num_features = 2048
        self.extractor_id = "inception-v3-2015-12-05-pool3"

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise FeatureError(f"inception features need images [N, 1 or 3, H, W], got {tuple(x.shape)}")
        u8 = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        return self.net(u8).reshape(x.shape[0], -1).float()
