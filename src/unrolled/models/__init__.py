"""Learned solvers: linear transformers and Memformers."""

from __future__ import annotations

import torch
from torch import nn

from unrolled.config import LearnedMethod
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
    "build_model",
    "query_readout",
]


def build_model(method: LearnedMethod, d: int, n: int, depth: int, generator: torch.Generator) -> nn.Module:
    """The model a :class:`~unrolled.config.LearnedMethod` describes, with ``depth`` layers (or steps)."""
    if method.kind == "lfom":
        return UnrolledLFOM(d, depth, method.lfom_form, method.gamma_init, method.lfom_objective)
    common = dict(
        d=d,
        n=n,
        layers=depth,
        heads=method.heads,
        A=method.A,
        B=method.B,
        init_std=method.init_std,
        fixed_scale=method.fixed_scale,
        attention=method.attention,
        generator=generator,
    )
    if method.kind == "linear_transformer":
        return LinearTransformer(**common)
    if method.kind == "memformer_cgd":
        return CGDMemformer(**common)
    if method.kind == "memformer_lfom":
        return LFOMMemformer(**common, gamma_init=method.gamma_init, include_current=True)
    if method.kind == "memformer_lfom_plus":
        return LFOMMemformer(**common, gamma_init=method.gamma_init, include_current=False)
    if method.kind == "memformer_recurrent":
        return RecurrentMemformer(**common)
    raise ValueError(f"unknown learned method kind {method.kind!r}")
