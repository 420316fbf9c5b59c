"""``results.json`` of a text experiment: accuracy per test γ, layerwise loss and accuracy, violations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unrolled.experiments.aggregate import header, mean_std, published_at
from unrolled.experiments.objectives import objective_entry
from unrolled.experiments.text.config import TextExperiment


def aggregate(cfg: TextExperiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method: accuracy per γ (mean ± std over seeds), mean layerwise loss and accuracy per γ, the share
    of layers that do not descend, and the final multipliers. The paper's numbers, keyed by γ in the config,
    are lists over ``published_gammas`` here."""
    gammas = [str(g) for g in cfg.perturbation.test_gammas]
    published_gammas = sorted({float(g) for values in (cfg.published or {}).values() for g in values})
    first = records[0] if records else {}
    out: dict[str, Any] = {
        **header(cfg, "text classification"),
        "gammas": [float(g) for g in gammas],
        "train_gamma": cfg.perturbation.train_gamma,
        "noise": cfg.perturbation.kind,
        "seeds": list(cfg.seeds),
        "data": first.get("data", {}),
        "methods": {},
        "published": published_at(cfg.published, published_gammas),
        "published_gammas": published_gammas,
        "published_source": cfg.published_source,
    }
    for m in cfg.methods:
        recs = [r for r in records if r["method"] == m.name]
        per_seed = [[r["eval"][g]["accuracy"] for g in gammas] for r in recs]
        acc_mean, acc_std = mean_std(per_seed)

        def layer_mean(key: str, recs: list[dict[str, Any]] = recs) -> dict[str, list[float]]:
            return {
                g: torch.tensor([r["eval"][g][key] for r in recs], dtype=torch.float64).mean(0).tolist()
                for g in gammas
            }

        entry: dict[str, Any] = {
            "kind": m.kind,
            "model": getattr(m, "model", None) or f"UT {m.width}×{m.depth}",  # type: ignore[union-attr]
            "label": m.label or m.name,
            "constrained": m.constraints is not None,
            "alpha": m.constraints.alpha if m.constraints is not None else None,
            "accuracy_mean": acc_mean,
            "accuracy_std": acc_std,
            "accuracy_per_seed": per_seed,
            "layer_loss_mean": layer_mean("layer_loss"),
            "layer_accuracy_mean": layer_mean("layer_accuracy"),
            "violation_share": {
                g: sum(r["eval"][g]["violation_share"] for r in recs) / len(recs) for g in gammas
            },
            "sigma_per_seed": [r["sigma"] for r in recs],
            "parameters": recs[0]["parameters"],
            "trainable_parameters": recs[0]["trainable_parameters"],
            "layers": recs[0]["layers"],
            **objective_entry(m, recs),
        }
        if "multipliers" in recs[0]:
            entry["multipliers_per_seed"] = [r["multipliers"] for r in recs]
        out["methods"][m.name] = entry
    return out
