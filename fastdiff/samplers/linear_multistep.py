"""Linear multistep (Adams-Bashforth) solvers of the EDM probability-flow ODE dx̃/dsigma = (x̃ - D) / sigma."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..processes.base import EDMView
from . import register_sampler
from .base import CountedScore, SamplerError
from .edm import GridEDMSampler, SigmaGrid, edm_denoise
from .noise import NoiseSource

# Adams-Bashforth weights for equal steps, newest derivative first (orders 1-4)
AB_WEIGHTS = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def adams_bashforth_weights(nodes: list[float], target: float) -> list[float]:
    """Weights w_j with x(target) - x(nodes[0]) ~ sum_j w_j f(nodes[j]) for any grid (newest node first).

    The integral of f from nodes[0] to target, exact for polynomials f of degree < len(nodes): in the variable
    u = (tau - nodes[0]) / (target - nodes[0]) the weights solve sum_j w_j u_j^k = (target - nodes[0]) / (k + 1),
    k = 0..K-1 (the Lagrange-basis integrals k-diffusion's lms computes by quadrature, here in closed form).
    """
    delta = target - nodes[0]
    u = torch.tensor([(s - nodes[0]) / delta for s in nodes], dtype=torch.float64)
    k = torch.arange(len(nodes), dtype=torch.float64)
    vander_t = u[None, :] ** k[:, None]  # [k, j] = u_j^k
    moments = delta / (k + 1)
    return torch.linalg.solve(vander_t, moments).tolist()


class SigmaMultistep(GridEDMSampler):
    """Shared loop: one evaluation per grid point, x̃ += sum_j w_j d_{i-j} with d = (x̃ - D) / sigma.

    Default grid log-SNR-uniform (by measurement: benchmarks/results/fast_solvers.md)."""

    @dataclass
    class Options(GridEDMSampler.Options):
        grid: SigmaGrid = "logsnr"
        order: int = 4

    def _check_options(self) -> None:
        if not 1 <= self.options.order <= 4:
            raise SamplerError(f"sampler {self.name!r}: order must be 1, 2, 3 or 4, got {self.options.order}")

    def nfe_for(self, steps: int) -> int:
        return steps

    def weights(self, nodes: list[float], target: float) -> list[float]:
        raise NotImplementedError

    def step_order(self, i: int, n: int) -> int:
        """Order of step i of n: ``order`` after the warm-up steps."""
        return min(self.options.order, i + 1)

    def integrate(self, score: CountedScore, process: EDMView, x: Tensor, sigmas: Tensor, noise: NoiseSource) -> Tensor:
        keep, n = self.options.order, len(sigmas) - 1
        derivs: list[Tensor] = []
        nodes: list[float] = []
        for i in range(n):
            sigma = float(sigmas[i])
            d = (x - edm_denoise(score, process, x, sigmas[i])) / sigma
            derivs = [d] + derivs[: keep - 1]
            nodes = [sigma] + nodes[: keep - 1]
            p = self.step_order(i, n)  # warm-up: order min(i + 1, order)
            w = self.weights(nodes[:p], float(sigmas[i + 1]))
            x = x + sum(wj * dj for wj, dj in zip(w, derivs))
        return x


@register_sampler("ipndm")
class IPNDM(SigmaMultistep):
    """iPNDM (Zhang & Chen 2022, "DEIS", Sec. 4 / App.): fixed-coefficient Adams-Bashforth in sigma of order
    ``order`` (default 4) with lower-order Adams-Bashforth warm-up steps, on the EDM ODE; NFE = steps."""

    def weights(self, nodes: list[float], target: float) -> list[float]:
        delta = target - nodes[0]
        return [delta * c for c in AB_WEIGHTS[len(nodes)]]


@register_sampler("lms")
class LMS(SigmaMultistep):
    """Variable-step linear multistep (Adams-Bashforth) in sigma, k-diffusion's lms (Karras et al. 2022 use it as
    a baseline): the Lagrange interpolant of the last ``order`` derivatives integrated exactly; NFE = steps."""

    def weights(self, nodes: list[float], target: float) -> list[float]:
        return adams_bashforth_weights(nodes, target)
