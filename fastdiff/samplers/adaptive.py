"""Adaptive samplers: the cost is set by tolerances, and the NFE is what each sample spent (counted while sampling).

A step budget (``nfe=`` / ``steps=``) has no meaning for them, so the base class refuses one with a message naming
the sampler's own knobs; ``min_nfe`` is the cost of the shortest possible run (one attempt plus the final step).
Fixed-step samplers derive from :class:`~fastdiff.samplers.base.StepSampler` instead.
"""
from __future__ import annotations

from typing import Any, ClassVar

from .base import Sampler, SamplerError


class AdaptiveSampler(Sampler):
    """Base of samplers that choose their own steps; ``SampleResult.nfe`` / ``nfe_per_sample`` report the cost."""

    adaptive: ClassVar[bool] = True
    knobs: ClassVar[str] = "its tolerance options"  # what to set instead of a budget (for the error message)

    def __init__(self, nfe: int | None = None, steps: int | None = None, **options: Any) -> None:
        if steps is not None or nfe is not None:
            given = "steps=" if steps is not None else "nfe="
            raise SamplerError(f"sampler {self.name!r} is adaptive and takes no {given}; set {self.knobs} instead")
        super().__init__(**options)

    @property
    def min_nfe(self) -> int:
        """Score evaluations of the shortest possible run (subclasses define it from their options)."""
        raise NotImplementedError
