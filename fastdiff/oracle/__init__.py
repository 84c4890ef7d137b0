"""Exact scores of Gaussian mixtures under every process (for tests and benchmarks)."""
from .gmm import GaussianMixture

__all__ = ["GaussianMixture"]
