"""Generated 2-D toy distributions: ring of 8 Gaussians, checkerboard, swiss roll, two moons.

Normalisation (all shapes): the noiseless geometry is centred and scaled by one scalar so that its
per-coordinate variance, averaged over the two coordinates, is exactly 1; then isotropic Gaussian
jitter of standard deviation ``noise`` is added in those normalised units, so the average
per-coordinate variance is ``1 + noise**2``.

- rings:        8 Gaussians with means on a circle of radius sqrt(2) (angles 2*pi*k/8), covariance
                noise^2 * I (default noise 0.1); exact parameters from :func:`rings_mixture`.
- checkerboard: uniform on the 8 "black" cells (i + j even) of a 4x4 board on [-2, 2]^2, scaled by
                sqrt(3)/2 (each coordinate is then uniform on [-sqrt(3), sqrt(3)]); default noise 0.
- swissroll:    (t cos t, t sin t), t ~ U[1.5 pi, 4.5 pi] (scikit-learn's parameterisation), centred
                and scaled with closed-form moments; default noise 0.05.
- moons:        scikit-learn's two half circles (cos a, sin a) and (1 - cos a, 0.5 - sin a),
                a ~ U[0, pi], half the points each, centred and scaled with closed-form moments;
                default noise 0.05.
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
from torch.utils.data import Dataset

from fastdiff.registry import DATASETS

Shape = Literal["rings", "checkerboard", "swissroll", "moons"]  # the config schema checks names against this
SHAPES: tuple[str, ...] = get_args(Shape)
DEFAULT_NOISE: dict[str, float] = {"rings": 0.1, "checkerboard": 0.0, "swissroll": 0.05, "moons": 0.05}
RING_MODES = 8
RING_RADIUS = math.sqrt(2.0)
CHECKER_SCALE = math.sqrt(3.0) / 2.0
SWISS_T = (1.5 * math.pi, 4.5 * math.pi)


class MixtureParams(NamedTuple):
    """Gaussian mixture parameters: weights [K], means [K, d], covs [K, d, d] (float64)."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor


def rings_mixture(noise: float = DEFAULT_NOISE["rings"]) -> MixtureParams:
    """Exact mixture parameters of the ``rings`` shape (8 equal-weight Gaussians, cov noise^2 I)."""
    if not noise > 0:
        raise ValueError(f"rings_mixture needs noise > 0 (the component std), got {noise!r}")
    angles = 2 * math.pi * torch.arange(RING_MODES, dtype=torch.float64) / RING_MODES
    means = RING_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    weights = torch.full((RING_MODES,), 1.0 / RING_MODES, dtype=torch.float64)
    covs = (noise**2) * torch.eye(2, dtype=torch.float64).expand(RING_MODES, 2, 2).clone()
    return MixtureParams(weights, means, covs)


def _swissroll_moments() -> tuple[float, float, float]:
    """Closed-form mean (mx, my) and scalar scale of (t cos t, t sin t) for t ~ U[a, b]."""
    a, b = SWISS_T
    length = b - a
    mx = ((b * math.sin(b) + math.cos(b)) - (a * math.sin(a) + math.cos(a))) / length
    my = ((math.sin(b) - b * math.cos(b)) - (math.sin(a) - a * math.cos(a))) / length
    mean_t2 = (b**3 - a**3) / (3 * length)
    return mx, my, math.sqrt((mean_t2 - mx**2 - my**2) / 2)


def _moons_moments() -> tuple[float, float, float]:
    """Closed-form mean (0.5, 0.25) and scalar scale: var_x = 3/4, var_y = 9/16 - 1/pi."""
    return 0.5, 0.25, math.sqrt((0.75 + 0.5625 - 1 / math.pi) / 2)


def _rings(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(RING_MODES, (n,), generator=g)
    angle = 2 * math.pi * k.double() / RING_MODES
    return RING_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    cell = torch.randint(8, (n,), generator=g)
    i = cell // 2  # column 0..3
    j = 2 * (cell % 2) + (i % 2)  # row 0..3 with i + j even
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    xy = torch.stack([i, j], dim=1).double() - 2.0 + u
    return CHECKER_SCALE * xy


def _swissroll(n: int, g: torch.Generator) -> torch.Tensor:
    a, b = SWISS_T
    t = a + (b - a) * torch.rand(n, generator=g, dtype=torch.float64)
    mx, my, s = _swissroll_moments()
    return torch.stack([(t * torch.cos(t) - mx) / s, (t * torch.sin(t) - my) / s], dim=1)


def _moons(n: int, g: torch.Generator) -> torch.Tensor:
    a = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    inner = torch.rand(n, generator=g) < 0.5
    x = torch.where(inner, 1 - torch.cos(a), torch.cos(a))
    y = torch.where(inner, 0.5 - torch.sin(a), torch.sin(a))
    mx, my, s = _moons_moments()
    return torch.stack([(x - mx) / s, (y - my) / s], dim=1)


_GEOMETRY = {"rings": _rings, "checkerboard": _checkerboard, "swissroll": _swissroll, "moons": _moons}


def sample_toy2d(
    shape: str, n: int, generator: torch.Generator | None = None, noise: float | None = None
) -> torch.Tensor:
    """Draw n points [n, 2] (float32) of a normalised toy shape; noise=None uses the shape's default."""
    if shape not in _GEOMETRY:
        raise ValueError(f"unknown toy2d shape {shape!r}; allowed: {', '.join(SHAPES)}")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"toy2d n must be a positive int, got {n!r}")
    noise = DEFAULT_NOISE[shape] if noise is None else float(noise)
    if not noise >= 0:
        raise ValueError(f"toy2d noise must be >= 0, got {noise!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = _GEOMETRY[shape](n, g)
    if noise > 0:
        x = x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x.float()


@DATASETS.register("toy2d")
class Toy2D(Dataset):
    """A fixed set of n points of a 2-D toy shape, generated deterministically from ``seed``."""

    kind = "vector"

    def __init__(self, shape: Shape = "rings", n: int = 20000, seed: int = 0, noise: float | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"toy2d seed must be an int, got {seed!r}")
        self.shape = shape
        self.seed = seed
        self.noise = DEFAULT_NOISE.get(shape, 0.0) if noise is None else float(noise)
        self.data = sample_toy2d(shape, n, torch.Generator().manual_seed(seed), noise)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (2,)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]

    def __repr__(self) -> str:
        return f"Toy2D(shape={self.shape!r}, n={len(self)}, seed={self.seed}, noise={self.noise})"
