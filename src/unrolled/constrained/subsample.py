"""The unbiased subsampled estimator of intermediate readouts, shared by every objective that uses it.

An intermediate layer's loss f_l is a mean over items (samples of a batch, trained tokens of a language
model). Reading it out on a uniformly drawn subset of the items, without replacement, gives an unbiased
estimate of that mean at the subset's share of the readout's cost. The last layer is always read in full:
it is the training loss itself. The video denoisers' :class:`~unrolled.constrained.ConstrainedObjective`
subsamples samples, :class:`~unrolled.models.readouts.LogitLens` tokens, through this one function.
"""

from __future__ import annotations

import torch
from torch import Tensor


def subsample(count: int, fraction: float, generator: torch.Generator | None = None) -> Tensor | None:
    """Indices of ``max(1, round(fraction · count))`` of ``count`` items drawn uniformly without replacement
    (a CPU tensor, from ``generator``), or None when ``fraction`` ≥ 1 (read every item).

    The mean of any per-item quantity over the drawn items is an unbiased estimate of its mean over all.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"readout fraction must be in (0, 1], got {fraction}")
    if fraction >= 1 or count <= 1:
        return None
    keep = max(1, round(fraction * count))
    return torch.randperm(count, generator=generator)[:keep]
