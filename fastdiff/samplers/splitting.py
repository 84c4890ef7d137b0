"""Splitting integrators for PSLD: SSCS, naive OBA/BAO/OBAB and reduced OBA (SPS) (Pandey, Rudolph & Mandt 2024).

Every step goes from t down to t - h on the time grid (default: quadratic striding, dense near t_eps, where the
PSLD momentum block is stiff); delta = integral of beta over the step. The sub-steps are methods of the phase-space
process (``fastdiff/processes/phase_space.py``). Per unit of delta, with s = score, the reverse SDE is

    dx = [(Gamma x - M^-1 m)/2 + Gamma s_x] + sqrt(Gamma) dw,     dm = [(x + nu m)/2 + M nu s_m] + sqrt(M nu) dw',

and its lambda family (noise lambda G, score drift (1 + lambda^2)/2 G G^T s per coordinate) has the same marginals.
Why each split composes to it: a Lie composition phi_3 o phi_2 o phi_1 of flows whose drifts b_i and diffusions
D_i sum to those of an SDE moves z by delta (b_1 + b_2 + b_3)(z) + noise of covariance delta (D_1 + D_2 + D_3),
up to O(delta^2) in mean and covariance (each flow is z + delta b_i + O(delta^2) with its own independent noise),
so it is a first-order (weak) scheme of that SDE; a symmetric (Strang) composition has the same first-order terms.
Reusing one score, taken after O at a time within the step, for B and A changes each by O(delta) * delta: the
composition keeps its first-order terms. The splits, checked term by term:

- ``sscs`` (Dockhorn et al. 2022): drift = (beta/2) K z + G G^T (s + Sigma_inf^-1 z), K = [[-Gamma, -M^-1],
  [1, -nu]], Sigma_inf = diag(1, M). L = the OU dz = (beta/2) K z + G dw solved exactly; S = Euler step of the
  score part. L(h/2) S(h) L(h/2): (beta/2)K z + G G^T s + G G^T Sigma_inf^-1 z = the reverse drift, noise G.
- damped O/B/A (``oba``, ``bao``, ``obab``, ``sps split="damped"``; lambda_s, lambda_m on position / momentum):
  O: dx = -(lam_s^2 Gamma/2) x + lam_s sqrt(Gamma) dw, dm = -(lam_m^2 nu/2) m + lam_m sqrt(M nu) dw' (exact OU);
  B: dm = x/2 + c_m M nu (s_m + M^-1 m); A: dx = -M^-1 m/2 + c_s Gamma (s_x + x), c = (1 + lam^2)/2.
  Sum, x: -(lam_s^2/2) Gamma x - M^-1 m/2 + ((1 + lam_s^2)/2) Gamma (s_x + x) = (Gamma x - M^-1 m)/2 +
  ((1 + lam_s^2)/2) Gamma s_x; m likewise: the lambda family, noise diag(lam_s, lam_m) G.
- literal O/B/A (``sps split="literal"``; the split read off the paper's description, issue 14): O is the
  momentum's own linear part alone, dm = (nu/2) m + sqrt(M nu) dw', exact (it expands in reverse time:
  m <- e^{nu delta/2} m + sqrt(M (e^{nu delta} - 1)) xi); B: dm = x/2 + M nu s_m; A is an Euler-Maruyama
  position step dx = (Gamma x - M^-1 m)/2 + ((1 + lam_s^2)/2) Gamma s_x + lam_s sqrt(Gamma) dw.
  Sum: x as the lambda family with lam_s, m: (nu m + x)/2 + M nu s_m with noise sqrt(M nu): the reverse SDE, for
  every lam_s (the noise control acts on the position update only; lam_m is 1 by construction).

Schemes per step: ``sscs`` L(h/2) S(h) L(h/2) (1 NFE); ``oba`` O; score; B; score; A (2 NFE); ``bao`` score; B;
score; A; O (2 NFE); ``obab`` O; score; B(h/2); score; A; score; B(h/2) (3 NFE); ``sps`` O; score; B; A with that
same score (1 NFE). ``time_label`` is the time handed to the network (step start t, end t - h, or midpoint). All
end with the optional final step at t_eps (+1 NFE: Tweedie, or the authors' noise-free Euler step,
``final_step="euler"``). With Gaussian data every step is an affine Gaussian map, so the output law is exact
(tests/test_splitting.py propagates it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from ..processes.phase_space import PhaseSpaceProcess
from . import register_sampler
from .base import CountedScore, SamplerError, TimeGridSampler
from .noise import NoiseSource

TimeLabel = Literal["start", "mid", "end"]


def step_time(label: str, t: Tensor, t_next: Tensor) -> Tensor:
    """The time given to the network within the step [t_next, t]."""
    if label == "start":
        return t
    if label == "end":
        return t_next
    return 0.5 * (t + t_next)


class PhaseSpaceSampler(TimeGridSampler):
    """Base of the PSLD splitting samplers: phase-space processes only, quadratic grid by default."""

    requires = "phase_space"
    stochastic = True
    default_steps = 100

    @dataclass
    class Options(TimeGridSampler.Options):
        grid: Literal["uniform", "quadratic", "karras", "logsnr"] = "quadratic"
        time_label: TimeLabel = "start"

    def integrate(self, score: CountedScore, process: PhaseSpaceProcess, z: Tensor, ts: Tensor,
                  noise: NoiseSource) -> Tensor:
        for i in range(len(ts) - 1):
            z = self.step(process, score, z, ts[i], ts[i + 1], noise)
        return z

    def step(self, process: PhaseSpaceProcess, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        """One step from t down to t_next."""
        raise NotImplementedError


@register_sampler("sscs")
class SSCS(PhaseSpaceSampler):
    """Symmetric splitting CLD sampler (Dockhorn et al. 2022) on PSLD: exact OU half-steps around an Euler score step.

    The network sees the step-start time by default, as in the PSLD authors' code (it was "mid" before issue 14;
    start is also the better of the two on every oracle in benchmarks/results/splitting.md).
    """

    def integrate(self, score: CountedScore, process: PhaseSpaceProcess, z: Tensor, ts: Tensor,
                  noise: NoiseSource) -> Tensor:
        """Every step L(h/2) S(h) L(h/2); the two OU half-steps' kernels of the whole grid are formed at once."""
        t_mid = 0.5 * (ts[:-1] + ts[1:])
        first, second = process.linear_kernels(ts[:-1], t_mid), process.linear_kernels(t_mid, ts[1:])
        deltas = process.deltas(ts)
        for i in range(len(ts) - 1):
            z = process.apply_linear(z, first, i, noise.randn_like(z))
            s = score(z, step_time(self.options.time_label, ts[i], ts[i + 1]))
            z = process.score_part(z, deltas[i], s)
            z = process.apply_linear(z, second, i, noise.randn_like(z))
        return z


class OBASplitting(PhaseSpaceSampler):
    """Base of the damped O/B/A compositions: ``lambda_s`` / ``lambda_m`` scale the noise on position / momentum."""

    @dataclass
    class Options(PhaseSpaceSampler.Options):
        lambda_s: float = 1.0
        lambda_m: float = 1.0

    def _check_options(self) -> None:
        for key in ("lambda_s", "lambda_m"):
            lam = getattr(self.options, key)
            if not (lam >= 0 and lam < float("inf")):
                raise SamplerError(f"sampler {self.name!r}: {key} must be a finite number >= 0, got {lam!r}")

    # the three damped sub-steps with this sampler's lambdas (see the module docstring)
    def o(self, process: PhaseSpaceProcess, z: Tensor, delta: float, noise: NoiseSource) -> Tensor:
        return process.o_friction(z, delta, noise.randn_like(z), self.options.lambda_s, self.options.lambda_m)

    def b(self, process: PhaseSpaceProcess, z: Tensor, delta: float, s: Tensor) -> Tensor:
        c = 0.5 * (1.0 + self.options.lambda_m**2)
        return process.kick_momentum(z, delta, s, c, c)

    def a(self, process: PhaseSpaceProcess, z: Tensor, delta: float, s: Tensor) -> Tensor:
        c = 0.5 * (1.0 + self.options.lambda_s**2)
        return process.drift_position(z, delta, s, c, c)


@register_sampler("oba")
class NaiveOBA(OBASplitting):
    """Naive OBA splitting (Pandey et al. 2024): O, then B and A each after a fresh score evaluation."""

    nfe_per_step: ClassVar[int] = 2

    def step(self, process: PhaseSpaceProcess, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d, tl = process.delta(t, t_next), step_time(self.options.time_label, t, t_next)
        z = self.o(process, z, d, noise)
        z = self.b(process, z, d, score(z, tl))
        return self.a(process, z, d, score(z, tl))


@register_sampler("bao")
class NaiveBAO(OBASplitting):
    """Naive BAO splitting (Pandey et al. 2024): B and A each after a fresh score evaluation, then O."""

    nfe_per_step: ClassVar[int] = 2

    def step(self, process: PhaseSpaceProcess, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d, tl = process.delta(t, t_next), step_time(self.options.time_label, t, t_next)
        z = self.b(process, z, d, score(z, tl))
        z = self.a(process, z, d, score(z, tl))
        return self.o(process, z, d, noise)


@register_sampler("obab")
class NaiveOBAB(OBASplitting):
    """Naive OBAB splitting (Pandey et al. 2024): O(h), then velocity Verlet B(h/2) A(h) B(h/2), 3 scores per step."""

    nfe_per_step: ClassVar[int] = 3

    def step(self, process: PhaseSpaceProcess, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d, tl = process.delta(t, t_next), step_time(self.options.time_label, t, t_next)
        z = self.o(process, z, d, noise)
        z = self.b(process, z, 0.5 * d, score(z, tl))
        z = self.a(process, z, d, score(z, tl))
        return self.b(process, z, 0.5 * d, score(z, tl))


@register_sampler("sps")
class SPS(OBASplitting):
    """SPS, the reduced OBA splitting sampler (Pandey, Rudolph & Mandt 2024): one score after O, reused by B and A.

    ``split="damped"``: O = friction + noise on both coordinates (lambda_s, lambda_m). ``split="literal"``: O = the
    momentum's own expanding linear part, A = an Euler-Maruyama position step whose noise lambda_s scales
    (lambda_m must stay 1). Derivations in the module docstring.

    Defaults (damped, time label start, lambda_s 1, lambda_m 0.8) are the best SPS measured in issue 14's sweep
    (benchmarks/results/splitting.md): the literal split diverges at 20 NFE; lambda_s changes little (Gamma is
    small); start < mid < end; lambda_m 0.5 is best on the oracles but blows up on a trained network, 0.8 beats
    1.0 on both. No SPS reproduces the paper's ordering there: SSCS stays ahead.
    """

    @dataclass
    class Options(OBASplitting.Options):
        split: Literal["damped", "literal"] = "damped"
        time_label: TimeLabel = "start"
        lambda_s: float = 1.0
        lambda_m: float | None = None  # None: 0.8 for split="damped", 1 (the only allowed value) for "literal"

    def _check_options(self) -> None:
        o = self.options
        if o.split == "literal" and o.lambda_m not in (None, 1.0):
            raise SamplerError(f"sampler {self.name!r}: split='literal' keeps the full momentum noise (lambda_m = 1), "
                               f"got lambda_m={o.lambda_m}; use split='damped' to scale it")
        if o.lambda_m is None:
            o.lambda_m = 1.0 if o.split == "literal" else 0.8
        super()._check_options()

    def step(self, process: PhaseSpaceProcess, score: CountedScore, z: Tensor, t: Tensor, t_next: Tensor,
             noise: NoiseSource) -> Tensor:
        d, tl = process.delta(t, t_next), step_time(self.options.time_label, t, t_next)
        if self.options.split == "damped":
            z = self.o(process, z, d, noise)
            s = score(z, tl)
            return self.a(process, self.b(process, z, d, s), d, s)
        lam = self.options.lambda_s
        xi = noise.randn_like(z)  # one draw: its momentum half feeds O, its position half feeds A
        z = process.o_momentum(z, d, xi)
        s = score(z, tl)
        z = process.kick_momentum(z, d, s, 1.0, 0.0)
        return process.drift_position(z, d, s, 0.5 * (1.0 + lam**2), 0.5, noise=lam, xi=xi)
