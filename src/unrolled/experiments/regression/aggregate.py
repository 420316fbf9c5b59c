"""``results.json`` of a regression experiment: log loss per method, depth and split, over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from unrolled.experiments.aggregate import (
    finite_mean,
    finite_or_none,
    finite_std,
    header,
    published_at,
    safe_log,
)
from unrolled.experiments.regression.config import ClassicalMethod, RegressionExperiment
from unrolled.tasks.regression import RegressionTask


def aggregate(cfg: RegressionExperiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method and depth: log loss per seed, its mean and std over seeds, and mean layerwise curves.

    The headline split is ``test`` (fresh held-out prompts) unless ``eval.in_sample`` is set, when it is
    ``train`` (the fixed training batch) and the results say so. Every further split a method was scored
    on is aggregated the same way: ``train`` (fixed_batch), ``shift:<name>`` (held-out prompts of a shifted
    distribution) and, for mixtures, ``adapt:<name>`` (the batch the gates were fit on). A mixture's
    experts appear as methods of their own (``expert_variance`` set).
    """
    headline = "train" if cfg.eval.in_sample else "test"
    zero = RegressionTask(cfg.task, cfg.seeds[0]).zero_predictor_loss()
    out: dict[str, Any] = {
        **header(cfg, "regression"),
        "protocol": cfg.train.protocol,
        "headline_split": headline,
        "evaluation": "in-sample (the training batch)" if headline == "train" else "held-out prompts",
        "depths": list(cfg.depths),
        "seeds": list(cfg.seeds),
        "zero_predictor_log_loss": math.log(zero),
        "shifts": {
            name: {
                "zero_predictor_log_loss": math.log(RegressionTask(task, cfg.seeds[0]).zero_predictor_loss()),
                "variance": task.variance,
                "covariance": task.covariance,
            }
            for name, task in cfg.shifted_tasks().items()
        },
        "methods": {},
        "published": published_at(cfg.published, cfg.depths),
        "published_source": cfg.published_source,
    }
    experts: dict[str, float] = {}
    for rec in records:
        if rec.get("expert_variance") is not None:
            experts.setdefault(rec["method"], rec["expert_variance"])
    entries: list[tuple[str, str, str, bool, float | None]] = [
        (m.name, m.kind, m.label or m.name, not isinstance(m, ClassicalMethod), None) for m in cfg.methods
    ]
    entries += [(name, "expert", f"expert (σ² = {v:g})", True, v) for name, v in experts.items()]
    for name, kind, label, learned, variance in entries:
        entry: dict[str, Any] = {"kind": kind, "label": label, "learned": learned}
        if variance is not None:
            entry["expert_variance"] = variance
        recs = [r for r in records if r["method"] == name]
        for split in dict.fromkeys(k for r in recs for k in r["layerwise"]):
            entry[split] = _split_stats(cfg, recs, split)
        tuned = {str(r["seed"]): r["tuned"] for r in recs if "tuned" in r}
        if tuned:
            entry["tuned"] = tuned
        adapted = {str(r["seed"]) + f"_L{r['depth']}": r["adapted"] for r in recs if "adapted" in r}
        if adapted:
            entry["adapted"] = adapted
        out["methods"][name] = entry
    infeasible = {
        f"{r['method']} (seed {r['seed']}, L = {r['depth']})": r["objective"]["infeasible_status"]
        for r in records
        if (r.get("objective") or {}).get("infeasible_status")
    }
    if infeasible:
        out["infeasible"] = infeasible
    return out


def _split_stats(cfg: RegressionExperiment, recs: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """One method's numbers on one split: per seed and depth, their mean and std, and the mean curves."""
    per_seed = []  # [seed][depth] log loss at the last layer (inf: diverged)
    curves = []  # [seed][depth] log-loss curve over layers 0..L
    for seed in cfg.seeds:
        row, seed_curves = [], []
        for L in cfg.depths:
            rec = next(r for r in recs if r["seed"] == seed and r["depth"] in (None, L))
            curve = [math.inf if v is None else safe_log(v) for v in rec["layerwise"][split][str(L)]]
            row.append(curve[-1])
            seed_curves.append(curve)
        per_seed.append(row)
        curves.append(seed_curves)
    mean_curves = {
        str(L): finite_or_none(finite_mean(torch.tensor([c[i] for c in curves], dtype=torch.float64)))
        for i, L in enumerate(cfg.depths)
    }
    t = torch.tensor(per_seed, dtype=torch.float64)
    diverged = (~t.isfinite()).sum(0)
    return {
        "log_loss_mean": finite_or_none(finite_mean(t)),
        "log_loss_std": finite_or_none(finite_std(t)),
        "log_loss_per_seed": [finite_or_none(row) for row in t],
        "layerwise_log_loss_mean": mean_curves,
        "diverged_seeds": [int(k) for k in diverged],
    }
