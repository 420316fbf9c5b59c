"""Scoring in-context learners and baselines on a seed's splits, and reading a learner's layers.

Errors are squared errors normalised by d, at every prompt length (Garg et al.'s figure), stored per split as

* ``curve``: the mean over prompts at every prefix ``[S][N]`` for each of S states (layers, iterations);
* ``last`` / ``all``: per state, the mean, std and count over prompts of the error at the last pair (the
  query of the Memformer papers) and of the error averaged over the prompt's pairs, so that aggregation can
  give prompt-level as well as seed-level intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from unrolled.eval.reading import best_matching, fit_probes, probe_predictions, residual_similarity
from unrolled.experiments.aggregate import losses
from unrolled.experiments.icl.config import BaselineConfig
from unrolled.models.icl import InContextLearner, Prompts
from unrolled.solvers.prefix import (
    IterativeNewton,
    Lasso,
    PrefixCG,
    PrefixGD,
    bayes,
    default_gd_grid,
    least_squares,
    prefix_errors,
    ridge,
    tune_alpha,
    tune_gd,
    tuned_gd,
)
from unrolled.tasks.regression import RegressionTask

CHUNK = 1000
"""Prompts per forward pass when a learner is scored (bounds memory for long prompts and wide models)."""


def error_stats(errors: Tensor, d: int) -> dict[str, Any]:
    """``errors [S, B, N]`` (squared) -> ``curve``, ``last``, ``all`` of the errors / d (module docstring)."""
    e = errors.to(torch.float64) / d
    last, mean = e[..., -1], e.mean(dim=-1)
    return {
        "curve": [losses(row) for row in e.mean(dim=1)],
        "last": {"mean": losses(last.mean(1)), "sd": losses(last.std(1)), "n": e.shape[1]},
        "all": {"mean": losses(mean.mean(1)), "sd": losses(mean.std(1)), "n": e.shape[1]},
    }


@torch.no_grad()
def learner_errors(model: InContextLearner, prompts: Prompts) -> Tensor:
    """Squared errors of every layer's shared readout: ``[L + 1, B, N]`` (float64), in chunks of prompts."""
    model.eval()
    out = []
    for start in range(0, prompts.batch_size, CHUNK):
        part = prompts[start : start + CHUNK]
        traj = model(part)
        out.append(torch.stack([(traj.readout(s) - part.ys).double().square() for s in traj.states]))
    return torch.cat(out, dim=1)


@torch.no_grad()
def learner_states(model: InContextLearner, prompts: Prompts) -> list[Tensor]:
    """The states of every layer on ``prompts``: L + 1 tensors ``[B, 2N, D]`` (in chunks)."""
    model.eval()
    parts = [model(prompts[s : s + CHUNK]).states for s in range(0, prompts.batch_size, CHUNK)]
    return [torch.cat([p[l] for p in parts]) for l in range(len(parts[0]))]


def evaluate_learner(model: InContextLearner, splits: dict[str, Prompts]) -> dict[str, Any]:
    """Every split's :func:`error_stats` over the learner's layers (state l = layer l's readout)."""
    return {name: error_stats(learner_errors(model, p), p.d) for name, p in splits.items()}


def method_trajectories(
    prompts: Prompts, cfg: BaselineConfig, depth_hint: int
) -> dict[str, tuple[list[int], Tensor]]:
    """The iterative methods' residuals on ``prompts``: name -> (iteration counts, residuals ``[K, B, N]``)."""
    p64 = prompts.to(dtype=torch.float64)
    cg_steps = cfg.cg_steps or prompts.d + 1
    runs: dict[str, tuple[list[int], Any]] = {
        "newton": (list(range(cfg.newton_steps + 1)), IterativeNewton()(p64, cfg.newton_steps)),
        "cg": (list(range(cg_steps + 1)), PrefixCG()(p64, cg_steps)),
        "gd": (sorted(set(cfg.gd_steps)), PrefixGD(cfg.gd_lr)(p64, max(cfg.gd_steps), keep=cfg.gd_steps)),
    }
    return {
        name: (counts, torch.stack([traj.readout(s) - p64.ys for s in traj.states]))
        for name, (counts, traj) in runs.items()
    }


def read_layers(
    model: InContextLearner,
    probe_prompts: Prompts,
    test: Prompts,
    cfg: BaselineConfig,
) -> dict[str, Any]:
    """Fu et al.'s reading of every layer on ``test`` (module :mod:`unrolled.eval.reading`).

    Returns:
        ``probe_errors``: the probes' :func:`error_stats` on ``test``; for ``readout`` and ``probe`` residuals, per
        method (``newton``, ``cg``, ``gd``): the iteration counts, the similarity matrix ``[L + 1][K]`` and the
        best-matching count of every layer.
    """
    probes = fit_probes(learner_states(model, probe_prompts), probe_prompts.ys)
    states = learner_states(model, test)
    ys = test.ys.to(torch.float64)
    probe_pred = probe_predictions(probes, states)  # [L + 1, B, N]
    readout_pred = torch.stack([model.readout(s).double() for s in states])
    methods = method_trajectories(test, cfg, model.depth)
    out: dict[str, Any] = {
        "probe_errors": error_stats((probe_pred - ys).square(), test.d),
        "prompts": test.batch_size,
    }
    for reading, pred in (("readout", readout_pred), ("probe", probe_pred)):
        resid = pred - ys
        out[reading] = {}
        for name, (counts, method_resid) in methods.items():
            sim = residual_similarity(resid, method_resid)
            out[reading][name] = {
                "counts": counts,
                "similarity": [losses(row) for row in sim],
                "best": best_matching(sim, counts),
            }
    return out


def _baseline_errors(
    name: str, prompts: Prompts, task: RegressionTask, cfg: BaselineConfig, tuned: dict[str, Any]
) -> Tensor | None:
    """Squared errors ``[S, B, N]`` of one baseline on ``prompts`` (None when it does not apply)."""
    p = prompts.to(dtype=torch.float64)
    runs: dict[str, Callable[[], Any]] = {
        "least_squares": lambda: least_squares(p),
        "ridge": lambda: ridge(p, tuned["ridge"]),
        "bayes": lambda: bayes(p, task.config.label_noise, task.weight_covariance()),
        "lasso": lambda: Lasso(tuned["lasso"], cfg.lasso_steps)(p),
        "newton": lambda: IterativeNewton()(p, cfg.newton_steps),
        "cg": lambda: PrefixCG()(p, cfg.cg_steps or p.d + 1),
        "gd": lambda: PrefixGD(cfg.gd_lr)(p, max(cfg.gd_steps), keep=cfg.gd_steps),
        "gd_tuned": lambda: tuned_gd(p, tuned["gd_tuned"]),
    }
    if name == "bayes" and task.config.sparsity is not None:
        return None
    if name == "lasso" and "lasso" not in tuned:
        return None
    return prefix_errors(runs[name](), p)


BASELINES = ("least_squares", "ridge", "bayes", "lasso", "newton", "cg", "gd", "gd_tuned")
"""Every baseline a seed is scored with (Bayes only for Gaussian priors, Lasso only for sparse tasks)."""

TEST_ONLY = ("gd",)
"""Baselines scored on the ``test`` split only: GD with Fu et al.'s fixed step runs thousands of iterations
(the layer reading's log grid) and is not part of the shift table."""


def tune_baselines(validation: Prompts, cfg: BaselineConfig, sparse: bool) -> dict[str, Any]:
    """Ridge's λ, Lasso's α (sparse tasks) and GD's step per iteration count, on the validation prompts."""
    v = validation.to(dtype=torch.float64)
    tuned: dict[str, Any] = {}
    tuned["ridge"], _ = tune_alpha(ridge, v, cfg.ridge_grid)
    if sparse:
        tuned["lasso"], _ = tune_alpha(lambda p, a: Lasso(a, cfg.lasso_steps)(p), v, cfg.lasso_grid)
    if cfg.gd_tuned_steps:
        grid = default_gd_grid("mean", v.d, v.points)
        tuned["gd_tuned"] = tune_gd(v, cfg.gd_tuned_steps, grid, "mean")
    return tuned


def evaluate_baselines(
    splits: dict[str, Prompts],
    tasks: dict[str, RegressionTask],
    cfg: BaselineConfig,
    tuned: dict[str, Any],
    names: Sequence[str] = BASELINES,
) -> dict[str, dict[str, Any]]:
    """split -> baseline -> :func:`error_stats` (states: one for closed forms, one per iteration count)."""
    out: dict[str, dict[str, Any]] = {}
    for split, prompts in splits.items():
        out[split] = {}
        for name in names:
            if name == "gd_tuned" and "gd_tuned" not in tuned:
                continue
            if name in TEST_ONLY and split != "test":
                continue
            errors = _baseline_errors(name, prompts, tasks[split], cfg, tuned)
            if errors is not None:
                out[split][name] = error_stats(errors, prompts.d)
    return out
