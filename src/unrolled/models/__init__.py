"""Learned solvers: linear transformers and Memformers (configs become models in the regression family)."""

from __future__ import annotations

from unrolled.models.linear_attention import LinearAttention
from unrolled.models.memformer import (
    CGDMemformer,
    LFOMMemformer,
    LinearTransformer,
    RecurrentMemformer,
    query_readout,
)
from unrolled.models.mixture import MixtureOfExperts
from unrolled.solvers.classical import UnrolledLFOM

__all__ = [
    "CGDMemformer",
    "LFOMMemformer",
    "LinearAttention",
    "LinearTransformer",
    "MixtureOfExperts",
    "RecurrentMemformer",
    "UnrolledLFOM",
    "query_readout",
]
