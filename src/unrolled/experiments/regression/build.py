"""From regression config entries to solvers: learned models, classical methods, a mixture's experts."""

from __future__ import annotations

import torch
from torch import nn

from unrolled.experiments.regression.config import ClassicalMethod, LearnedMethod, MixtureMethod
from unrolled.models import CGDMemformer, LFOMMemformer, LinearTransformer, RecurrentMemformer
from unrolled.solvers import ConjugateGradient, FirstOrderSolver, GradientDescent, HeavyBall, Nesterov
from unrolled.solvers.classical import UnrolledLFOM
from unrolled.tasks.regression import RegressionTask


def build_model(method: LearnedMethod, d: int, n: int, depth: int, generator: torch.Generator) -> nn.Module:
    """The model a :class:`LearnedMethod` describes, with ``depth`` layers (or steps)."""
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
        normalize=method.normalize,
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


def build_classical(
    method: ClassicalMethod, task: RegressionTask, lr: float | None, momentum: float | None
) -> FirstOrderSolver:
    """The classical solver a config entry describes, with the given step size and momentum."""
    if method.kind == "cg":
        return ConjugateGradient()
    assert lr is not None
    if method.kind == "gd":
        P = None
        if method.preconditioner == "inverse_covariance":
            P = torch.linalg.inv(task.input_second_moment())
        return GradientDescent(lr, preconditioner=P, objective=method.objective)
    assert momentum is not None
    cls = HeavyBall if method.kind == "momentum" else Nesterov
    return cls(lr, momentum, objective=method.objective)


def mixture_expert(m: MixtureMethod, variance: float) -> LearnedMethod:
    """The expert of ``m`` for ``variance``, named by its architecture so mixtures can share it."""
    spec = f"{m.expert_kind}_A{m.A}_B{m.B}_h{m.heads}_std{m.init_std:g}_g{m.gamma_init:g}"
    if m.normalize:
        spec += "_normalized"
    return m.expert(variance).model_copy(update={"name": f"expert_{spec}_var{variance:g}"})
