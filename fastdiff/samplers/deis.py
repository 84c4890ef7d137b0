"""DEIS tAB (Zhang & Chen 2022, "Fast Sampling of Diffusion Models with Exponential Integrator"), in the EDM view.

On the probability-flow ODE dx̃/dsigma = eps(x̃, sigma) = (x̃ - D) / sigma, the exponential integrator of DEIS with
the noise prediction interpolated by a polynomial is, in the EDM variables, an Adams-Bashforth step whose
interpolation variable is u = log sigma (the log of DEIS's rho = sigma / alpha) rather than sigma:

    x̃_{i+1} = x̃_i + sum_j c_j eps_{i-j},   c_j = int_{sigma_i}^{sigma_{i+1}} L_j(log sigma) dsigma,

L_j the Lagrange basis through the last ``order`` nodes u_{i-j}. With sigma = e^u the weights are integrals of
e^u times a polynomial, which have the closed form int e^u P(u) du = e^u (P - P' + P'' - ...) + C; it stays finite at
sigma = 0 (u -> -inf), so without ``lower_order_final`` the step to sigma = 0 is an ordinary step of the same order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import polynomial as P

from . import register_sampler
from .edm import SigmaGrid
from .linear_multistep import SigmaMultistep


def _exp_poly_antiderivative(coef: np.ndarray, u: float) -> float:
    """F(u) = e^u sum_k (-1)^k P^(k)(u), an antiderivative of e^u P(u); F(-inf) = 0."""
    if u == -math.inf:
        return 0.0
    total, sign, c = 0.0, 1.0, coef
    for _ in range(coef.size):  # P has coef.size - 1 nonzero derivatives after itself
        total += sign * float(P.polyval(u, c))
        c, sign = P.polyder(c), -sign
    return math.exp(u) * total


def deis_weights(nodes: list[float], target: float) -> list[float]:
    """c_j = int_{nodes[0]}^{target} L_j(log sigma) dsigma, L_j the Lagrange basis in log sigma through ``nodes``
    (newest first); target 0 allowed. Exact for eps polynomial in log sigma of degree < len(nodes)."""
    us = [math.log(s) for s in nodes]
    u_hi, u_lo = us[0], (math.log(target) if target > 0 else -math.inf)
    out = []
    for j, uj in enumerate(us):
        basis = np.array([1.0])
        for m, um in enumerate(us):
            if m != j:
                basis = P.polymul(basis, np.array([-um, 1.0]) / (uj - um))
        out.append(_exp_poly_antiderivative(basis, u_lo) - _exp_poly_antiderivative(basis, u_hi))
    return out


@register_sampler("deis")
class DEIS(SigmaMultistep):
    """DEIS tAB-``order`` (Zhang & Chen 2022, Eq. 14 with the polynomial in log rho, as diffusers' DEIS scheduler),
    warm-up orders 1, 2, ..; with ``lower_order_final`` the last two steps use orders 1 and <= 2, so the step to
    sigma = 0 is the Tweedie denoising at the last grid point, as in our DPM-Solver++ and UniPC (diffusers lowers
    them only below 15 steps: a polynomial in log sigma extrapolated to sigma = 0 leaves an O(sigma_min^2) error
    that does not shrink with the step size). Default grid: Karras (diffusers' competitive variant). NFE = steps."""

    @dataclass
    class Options(SigmaMultistep.Options):
        grid: SigmaGrid = "karras"
        order: int = 3
        lower_order_final: bool = True

    def step_order(self, i: int, n: int) -> int:
        order = min(self.options.order, i + 1)
        return min(order, n - i) if self.options.lower_order_final else order

    def weights(self, nodes: list[float], target: float) -> list[float]:
        return deis_weights(nodes, target)
