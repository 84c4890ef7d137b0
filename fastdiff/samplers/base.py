"""The sampler contract: Sampler, SampleResult, counted score evaluations, and the t-space base class."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, Sequence

import torch
from torch import Tensor

from ..processes.base import Process
from .grids import time_grid
from .noise import NoiseSource
from .options import build_options

ScoreFn = Callable[[Tensor, Tensor], Tensor]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SamplerError(ValueError):
    """A sampler was asked for something it cannot do (budget, process, options)."""


class SamplingNaNError(FloatingPointError):
    """Sampling produced NaN/inf; the message names the affected seeds."""

    def __init__(self, sampler: str, seeds: Sequence[int]) -> None:
        self.sampler, self.seeds = sampler, list(seeds)
        shown = ", ".join(str(s) for s in self.seeds[:20]) + (" ..." if len(self.seeds) > 20 else "")
        super().__init__(f"sampler {sampler!r} produced NaN/inf for {len(self.seeds)} sample(s), seeds: {shown}")


@dataclass
class SampleResult:
    """Output of :meth:`Sampler.sample`."""

    x: Tensor  # data part of the final state, float32
    state: Tensor  # full final state (momentum included for PSLD), sampler dtype
    nfe: float  # score evaluations per sample (int when all samples used the same number)
    calls: int  # batched score_fn calls
    nfe_per_sample: Tensor  # [B] int64
    seeds: list[int]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nfe_max(self) -> int:
        return int(self.nfe_per_sample.max())


class CountedScore:
    """Wraps a score_fn: counts evaluations per sample, casts to the network dtype and back, checks the output
    shape, and evaluates in fixed-shape chunks.

    With ``compute_batch`` = M > 0 the network only ever sees batches of exactly M rows (the last chunk is padded by
    repeating its last row). CPU kernels (GEMM/convolution blocking, thread splits) are chosen from the input
    shape, so a varying batch size changes float rounding; a fixed shape makes every sample's output independent
    of how many samples share its batch. 0 passes the batch through as it is (fastest, rounding then depends on
    the batch size).
    """

    def __init__(self, score_fn: ScoreFn, batch_size: int, device: torch.device, compute_batch: int = 0) -> None:
        self.score_fn = score_fn
        self.counts = torch.zeros(batch_size, dtype=torch.int64)
        self.calls = 0
        self.compute_batch = compute_batch
        params = getattr(score_fn, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        self.net_dtype = first.dtype if first is not None and first.is_floating_point() else None

    def __call__(self, z: Tensor, t: Tensor | float, idx: Tensor | None = None) -> Tensor:
        """score(z, t) for the rows idx of the batch (default: all rows)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=z.device)
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        if idx is None:
            if z.shape[0] != self.counts.shape[0]:
                raise ValueError("CountedScore called on a sub-batch without idx")
            self.counts += 1
        else:
            self.counts[idx.cpu()] += 1
        self.calls += 1
        zin = z if self.net_dtype is None else z.to(self.net_dtype)
        return self._evaluate(zin, t).to(z.dtype)

    def _evaluate(self, z: Tensor, t: Tensor) -> Tensor:
        m = self.compute_batch
        if m <= 0:
            return self._checked(z, t)
        outs = []
        for start in range(0, z.shape[0], m):
            zc, tc = z[start:start + m], t[start:start + m]
            n = zc.shape[0]
            if n < m:  # pad with copies of the last row so the kernels see the same shape every time
                zc = torch.cat([zc, zc[-1:].expand(m - n, *zc.shape[1:])])
                tc = torch.cat([tc, tc[-1:].expand(m - n)])
            outs.append(self._checked(zc, tc)[:n])
        return torch.cat(outs)

    def _checked(self, z: Tensor, t: Tensor) -> Tensor:
        out = self.score_fn(z, t)
        if not isinstance(out, Tensor) or out.shape != z.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise SamplerError(f"score_fn returned {got} for a state of shape {tuple(z.shape)}; it must return "
                               "a tensor of the state's shape")
        return out


class Sampler:
    """Base of every sampler: typed ``Options``, process check, per-seed noise, counted NFE (``sample``).

    How the cost is set is the subclass's business: :class:`StepSampler` (a step count / NFE budget) or
    :class:`~fastdiff.samplers.adaptive.AdaptiveSampler` (tolerances; NFE counted while sampling).
    """

    name: ClassVar[str] = "?"
    requires: ClassVar[str | None] = None  # process capability needed ("edm_view", "phase_space") or None
    stochastic: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False  # read-only flag for callers (tables, schema); True on AdaptiveSampler

    @dataclass
    class Options:
        dtype: Literal["float32", "float64"] = "float32"
        compute_batch: int = 64  # rows per network call, 0 = the whole batch (see CountedScore)

    def __init__(self, **options: Any) -> None:
        self.options = build_options(self.Options, self.name, options)
        if self.options.compute_batch < 0:
            raise SamplerError(f"sampler {self.name!r}: compute_batch must be >= 0 (0 = whole batch), "
                               f"got {self.options.compute_batch}")
        self._check_options()

    def _check_options(self) -> None:
        """Hook for cross-option validation (raise SamplerError)."""

    @property
    def min_nfe(self) -> int:
        """The fewest score evaluations per sample this sampler can spend."""
        raise NotImplementedError

    # ---- running ---------------------------------------------------------------------------------------
    @classmethod
    def supports(cls, process: Process) -> bool:
        return cls.requires is None or process.supports(cls.requires)

    def check_process(self, process: Process) -> None:
        if not self.supports(process):
            from ..registry import PROCESSES

            ok = [n for n in PROCESSES.names() if cls_supports(type(self), PROCESSES.get(n))]
            raise SamplerError(f"sampler {self.name!r} does not support process {type(process).__name__}; "
                               f"it supports: {', '.join(ok)}")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.options.dtype]

    def sample(self, score_fn: ScoreFn, process: Process, shape: Sequence[int],
               seeds: Iterable[int] | None = None, noise: NoiseSource | None = None,
               device: torch.device | str | None = None) -> SampleResult:
        """Draw samples for a data batch of ``shape``; one noise stream per seed."""
        self.check_process(process)
        shape = tuple(int(s) for s in shape)
        if noise is None:
            if seeds is None:
                raise SamplerError("sample() needs seeds=... or noise=NoiseSource(...)")
            noise = NoiseSource(seeds, device=device or "cpu")
        if len(noise) != shape[0]:
            raise SamplerError(f"batch size {shape[0]} does not match the {len(noise)} seeds given")
        device = torch.device(device) if device is not None else noise.device
        score = CountedScore(score_fn, shape[0], device, self.options.compute_batch)
        with torch.no_grad():
            out = self.run(score, process, shape, noise, device)
        state, info = out if isinstance(out, tuple) else (out, {})
        bad = ~torch.isfinite(state.reshape(state.shape[0], -1)).all(1)
        if bad.any():
            raise SamplingNaNError(self.name, [noise.seeds[i] for i in bad.nonzero().flatten().tolist()])
        counts = score.counts.clone()
        nfe: float = int(counts[0]) if bool((counts == counts[0]).all()) else float(counts.double().mean())
        x = process.data_part(state).to(torch.float32)
        return SampleResult(x=x, state=state, nfe=nfe, calls=score.calls, nfe_per_sample=counts,
                            seeds=list(noise.seeds), info=info)

    def run(self, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """Return the final state (optionally with an info dict)."""
        raise NotImplementedError

    def prior(self, process: Process, shape: tuple[int, ...], noise: NoiseSource, device: torch.device) -> Tensor:
        """z_T drawn from each sample's own stream, in the sampler dtype."""
        eps = noise.randn(process.state_shape(shape)[1:], dtype=self.dtype).to(device)
        return process.prior_sample(eps)

    # ---- save / load -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this sampler: ``get_sampler(**cfg)``."""
        return {"name": self.name, **self.budget_config(), **dataclasses.asdict(self.options)}

    def budget_config(self) -> dict[str, Any]:
        """The budget part of :meth:`config` (none here; ``steps`` for a StepSampler)."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({opts})"


class StepSampler(Sampler):
    """Samplers whose cost is fixed by a step count: ``nfe=N`` picks the largest count with NFE <= N."""

    min_steps: ClassVar[int] = 1
    default_steps: ClassVar[int] = 50

    def __init__(self, nfe: int | None = None, steps: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        if nfe is not None and steps is not None:
            raise SamplerError(f"sampler {self.name!r}: give nfe= or steps=, not both")
        if steps is not None:
            if not isinstance(steps, int) or isinstance(steps, bool) or steps < self.min_steps:
                raise SamplerError(f"sampler {self.name!r}: steps must be an integer >= {self.min_steps}, got {steps!r}")
            self.steps = steps
        elif nfe is not None:
            self.steps = self.steps_for(nfe)
        else:
            self.steps = self.default_steps
        self.budget = nfe

    def nfe_for(self, steps: int) -> int:
        """Counted score evaluations per sample for ``steps`` steps."""
        raise NotImplementedError

    @property
    def min_nfe(self) -> int:
        return self.nfe_for(self.min_steps)

    def steps_for(self, nfe: int) -> int:
        """Largest step count whose NFE does not exceed ``nfe``."""
        if not isinstance(nfe, int) or isinstance(nfe, bool):
            raise SamplerError(f"sampler {self.name!r}: nfe must be an integer, got {nfe!r}")
        if nfe < self.min_nfe:
            raise SamplerError(f"sampler {self.name!r}: NFE budget {nfe} is below its minimum {self.min_nfe}")
        steps = self.min_steps
        while self.nfe_for(steps + 1) <= nfe:
            steps += 1
        return steps

    @property
    def nfe(self) -> int:
        return self.nfe_for(self.steps)

    def budget_config(self) -> dict[str, Any]:
        return {"steps": self.steps}


def denoise_data_part(score: ScoreFn, process: Process, z: Tensor, t: Tensor) -> Tensor:
    """Tweedie denoising of the data part of z at t (1 NFE); the momentum part (PSLD) is kept as it is."""
    parts = list(process.split(z))
    parts[0] = process.denoise(z, t, score(z, t))
    return process.join(parts)


def cls_supports(cls: type[Sampler], process_cls: type) -> bool:
    req = cls.requires
    return req is None or req in getattr(process_cls, "capabilities", frozenset())


class TimeGridSampler(StepSampler):
    """Samplers that step a time grid from T to t_eps and end with an optional Tweedie step."""

    nfe_per_step: ClassVar[int] = 1

    @dataclass
    class Options(Sampler.Options):
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "uniform"
        rho: float = 7.0
        t_eps: float | None = None
        final_denoise: bool = True  # one last score evaluation at t_eps (counted), of the kind final_step
        # the final step: Tweedie denoise, or one noise-free Euler step of the reverse SDE from t_eps to 0
        final_step: Literal["tweedie", "euler"] = "tweedie"

    def nfe_for(self, steps: int) -> int:
        return steps * self.nfe_per_step + int(self.options.final_denoise)

    def end_time(self, process: Process) -> float | None:
        """Where the grid ends: the ``t_eps`` option (None: the process's t_eps_sample)."""
        return self.options.t_eps

    def grid(self, process: Process, device: torch.device) -> Tensor:
        return time_grid(self.options.grid, process, self.steps, self.end_time(process), self.options.rho, device)

    def run(self, score: CountedScore, process: Process, shape: tuple[int, ...], noise: NoiseSource,
            device: torch.device) -> Tensor:
        z = self.prior(process, shape, noise, device)
        ts = self.grid(process, device)
        z = self.integrate(score, process, z, ts, noise)
        return self.finish(score, process, z, ts[-1])

    def integrate(self, score: CountedScore, process: Process, z: Tensor, ts: Tensor, noise: NoiseSource) -> Tensor:
        """Step z along ts (decreasing, float64)."""
        raise NotImplementedError

    def finish(self, score: CountedScore, process: Process, z: Tensor, t_end: Tensor) -> Tensor:
        """The final step at t_end (1 NFE) when final_denoise is on: Tweedie (data part; momentum kept) or Euler.

        ``final_step="euler"`` is the PSLD authors' convention: z <- z + t_end (-f + G G^T score(z, t_end)), one
        noise-free Euler step of the reverse SDE from t_end to 0 (the whole state moves, momentum included).
        """
        if not self.options.final_denoise:
            return z
        if self.options.final_step == "euler":
            return z - t_end.to(z.dtype) * process.reverse_drift(z, t_end, score(z, t_end))
        return denoise_data_part(score, process, z, t_end)
