"""Cost per NFE (issue 13): the fast paths of the score wrapper and the samplers give the same floats as the plain
formulas they replace, and stay within their op budgets (counted aten ops: a load-independent cost measure)."""
from __future__ import annotations

import collections

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from fastdiff.model import ScoreModel
from fastdiff.processes import PSLD, VP
from fastdiff.processes.base import Process, append_dims, block_cholesky
from fastdiff.samplers.grids import _invert_decreasing
from fastdiff.samplers.noise import NoiseSource

T64 = torch.float64
PSLDS = [PSLD(), PSLD(gamma=0.0, nu=2.0), PSLD(gamma=0.5, kappa=0.3, beta=3.0)]


class OpCount(TorchDispatchMode):
    """Counts the aten ops dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def block_product(p: Process, mat: Tensor, z: Tensor) -> Tensor:
    """mat @ z per coordinate written out: block i = sum_j mat[:, i, j] z_j, j = 0, 1, ... in order."""
    mat = mat if mat.ndim == 3 else mat.unsqueeze(0)
    parts = z.chunk(p.k, dim=1)
    out = []
    for i in range(p.k):
        acc = append_dims(mat[:, i, 0].to(z.dtype), z.ndim) * parts[0]
        for j in range(1, p.k):
            acc = acc + append_dims(mat[:, i, j].to(z.dtype), z.ndim) * parts[j]
        out.append(acc)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("p", [VP(), PSLD()], ids=["k1", "k2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_block_apply_is_the_written_out_product(p, dtype):
    """Same products, same order of the sums: equal to the last bit (a difference means a changed formula)."""
    torch.manual_seed(0)
    z = torch.randn(5, p.k * 3, 4, 4, dtype=dtype)
    for mat in (torch.randn(5, p.k, p.k, dtype=T64), torch.randn(p.k, p.k, dtype=T64),
                torch.randn(1, p.k, p.k, dtype=T64)):
        assert torch.equal(p.apply(mat, z), block_product(p, mat, z))
    c = torch.rand(5, p.k, dtype=T64)
    assert torch.equal(p.scale_blocks(c, z), block_product(p, torch.diag_embed(c), z))
    empty = z[:0]  # sub-batches can be empty (adaptive samplers): shapes kept
    assert p.apply(torch.randn(p.k, p.k, dtype=T64), empty).shape == p.scale_blocks(c[:0], empty).shape == empty.shape


@pytest.mark.parametrize("p", PSLDS, ids=["psld", "cld", "psld-other"])
def test_psld_entrywise_kernel_is_the_matrix_form(p):
    """marginal_coeffs forms the covariance entry by entry; marginal_cov by matrix products (A init A^T + Q + 1e-9 I).
    With init = diag(0, kappa M) every entry is one product plus Q, so the two agree to the last bit, over batch
    sizes that exercise the vectorised and the scalar tail loops; log_snr likewise against the base-class formula."""
    for n in (1, 3, 18, 64, 257):
        t = torch.rand(n, dtype=T64)
        t[0] = 0.0
        a, L = p.marginal_coeffs(t)
        b = p.beta_integral(t)
        assert torch.equal(a, p._A(b)[:, :, 0])
        assert torch.equal(L, block_cholesky(p.marginal_cov(t)))
        assert torch.equal(p.log_snr(t), Process.log_snr(p, t))


def bisection(fn, target: Tensor, lo: float, hi: float, iters: int = 200) -> Tensor:
    """The reference: plain bisection to the last float64 ulp."""
    a, b = torch.full_like(target, lo), torch.full_like(target, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        above = fn(mid) > target
        a, b = torch.where(above, mid, a), torch.where(above, b, mid)
    return 0.5 * (a + b)


@pytest.mark.parametrize("p", PSLDS, ids=["psld", "cld", "psld-other"])
@pytest.mark.parametrize("lo,hi", [(1e-3, 1.0), (0.0, 1.0), (0.2, 0.7)])
def test_newton_inversion_is_as_accurate_as_bisection_in_few_evaluations(p, lo, hi):
    """Both answers are roots of log_snr up to its rounding noise, so the Newton answer's residual may exceed the
    bisection answer's by at most that noise: measured per target as the spread of log_snr over the 16 floats
    around the bisection root (cancellation makes it far above an ulp on CLD near t = 0), plus a few ulps of the
    log-SNR. The evaluation count (table + Newton steps) is the point of the change: <= 16 where bisection
    takes ~60."""
    calls = []

    def fn(t: Tensor) -> Tensor:
        calls.append(1)
        return p.log_snr(t)

    lam = p.log_snr(torch.linspace(lo, hi, 300, dtype=T64))
    with torch.no_grad():
        t_new = _invert_decreasing(fn, lam, lo, hi)
    assert len(calls) <= 16
    t_ref = bisection(p.log_snr, lam, lo, hi)
    res_new, res_ref = (p.log_snr(t_new) - lam).abs(), (p.log_snr(t_ref) - lam).abs()
    near, up, down = [t_ref], t_ref, t_ref
    for _ in range(8):
        up, down = torch.nextafter(up, torch.full_like(up, 2.0)), torch.nextafter(down, torch.full_like(down, -1.0))
        near += [up, down.clamp_min(0)]
    vals = p.log_snr(torch.stack(near).reshape(-1)).reshape(len(near), -1)
    spread = vals.max(0).values - vals.min(0).values
    assert (res_new <= res_ref + spread + 8 * 2.2e-16 * (1 + lam.abs())).all()
    assert ((t_new >= lo) & (t_new <= hi)).all()
    # targets beyond the range give the nearer end (bisection converges there too)
    out = _invert_decreasing(p.log_snr, torch.stack([lam[0] + 1, lam[-1] - 1]), lo, hi)
    assert out.tolist() == [lo, hi]


@pytest.mark.parametrize("shape", [(2,), (1,), (3, 5), (2, 8, 8)], ids=["2", "1", "15", "128"])
def test_noise_rows_are_each_seeds_own_randn_stream(shape):
    """Rows filled in place equal torch.randn(shape, generator=g) drawn per seed (sizes below and above 16,
    normal_'s scalar and vectorised paths), draw after draw."""
    seeds = [3, 0, 17, 2**40]
    src = NoiseSource(seeds)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    for _ in range(3):
        want = torch.stack([torch.randn(shape, generator=g) for g in gens])
        assert torch.equal(src.randn(shape), want)


class EpsNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.1))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.w * x


def test_psld_score_wrapper_op_budget():
    """The eps -> score wrapper around the network on PSLD: 281 aten ops per call before issue 13's cost work (kernel
    formed twice, 2x2 products as loops), 84 after. Budget 100: a regression (e.g. forming the kernel twice again)
    fails here whatever the machine load."""
    model = ScoreModel(EpsNet(), PSLD())
    z, t = torch.randn(64, 2, 8, 8), torch.full((64,), 0.3, dtype=T64)
    with torch.no_grad():
        model(z, t)  # warm-up (lazy inits)
        counter = OpCount()
        with counter:
            model(z, t)
    n = sum(counter.ops.values())
    assert n <= 100, counter.ops.most_common(10)
