"""``results.json`` of a video-denoising experiment: RMSE per γ, layerwise MSE, violations, multipliers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unrolled.experiments.aggregate import header, mean_std, published_at
from unrolled.experiments.denoising.config import DenoisingExperiment
from unrolled.experiments.denoising.reference import LABELS as TV_LABELS
from unrolled.experiments.denoising.reference import NAME as TV_NAME
from unrolled.experiments.objectives import objective_entry


def aggregate(cfg: DenoisingExperiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method: RMSE per γ (mean ± std over seeds), layerwise MSE per γ, violation share, multipliers.

    The paper's numbers are keyed by γ in the config; here they are lists over ``published_gammas`` (every
    γ any method has a number at), None where a method has none.
    """
    gammas = [str(g) for g in cfg.perturbation.test_gammas]
    published_gammas = sorted({float(g) for values in (cfg.published or {}).values() for g in values})
    out: dict[str, Any] = {
        **header(cfg, "video denoising"),
        "gammas": [float(g) for g in gammas],
        "train_gamma": cfg.perturbation.train_gamma,
        "seeds": list(cfg.seeds),
        "methods": {},
        "published": published_at(cfg.published, published_gammas),
        "published_gammas": published_gammas,
        "published_source": cfg.published_source,
        "skipped_files": sorted({tuple(f) for r in records for f in r.get("skipped_files", [])}),
    }
    for m in cfg.methods:
        recs = [r for r in records if r["method"] == m.name]
        rmse_mean, rmse_std = mean_std([[r["eval"][g]["rmse"] for g in gammas] for r in recs])
        layer = {
            g: torch.tensor([r["eval"][g]["layer_mse"] for r in recs], dtype=torch.float64).mean(0).tolist()
            for g in gammas
        }
        viol = {g: sum(r["eval"][g]["violation_share"] for r in recs) / len(recs) for g in gammas}
        entry: dict[str, Any] = {
            "kind": m.kind,
            "train_gamma": recs[0].get("train_gamma", cfg.perturbation.train_gamma),
            "steps": recs[0]["steps"],
            "baseline": m.baseline,
            "label": m.label or m.name,
            "constrained": m.constraints is not None,
            "alpha": m.constraints.alpha if m.constraints is not None else None,
            "rmse_mean": rmse_mean,
            "rmse_std": rmse_std,
            "rmse_per_seed": [[r["eval"][g]["rmse"] for g in gammas] for r in recs],
            "layer_mse_mean": layer,
            "violation_share": viol,
            "parameters": recs[0]["parameters"],
            # seconds per training step, over the seeds trained in one go (resumed units left out)
            "step_seconds": _step_seconds(recs),
            **objective_entry(m, recs, timing=False),
        }
        if "multipliers" in recs[0]:
            entry["multipliers_per_seed"] = [r["multipliers"] for r in recs]
        out["methods"][m.name] = entry
    tv = [r for r in records if r["method"] == TV_NAME]
    if tv:
        out["references"] = {}
        for key, label in TV_LABELS.items():
            mean, std = mean_std([[r["eval"][g][key] for g in gammas] for r in tv])
            weight = "weight" if key == "rmse" else "blind_weight"
            out["references"][f"{TV_NAME}_{key.removeprefix('rmse').strip('_') or 'tuned'}"] = {
                "label": label,
                "rmse_mean": mean,
                "rmse_std": std,
                "weight_per_seed": [[r["eval"][g][weight] for g in gammas] for r in tv],
            }
    out["gaps"] = robustness_gaps(out)
    return out


def _step_seconds(records: Sequence[dict[str, Any]]) -> float | None:
    """Mean seconds per training step of the units trained without a resume (None if there are none)."""
    whole = [r for r in records if r.get("train_seconds") is not None and not r.get("resumed_from")]
    return sum(r["train_seconds"] / r["steps"] for r in whole) / len(whole) if whole else None


def robustness_gaps(results: dict[str, Any]) -> dict[str, Any]:
    """RMSE(constrained) − RMSE(its ERM baseline), paired by seed, at the method's training γ and the largest γ.

    Only constrained methods that name a ``baseline`` take part. Negative: the constrained model is better.
    """
    gammas = results["gammas"]
    gaps: dict[str, Any] = {}
    for name, m in results["methods"].items():
        base = results["methods"].get(m.get("baseline") or "")
        if base is None:
            continue
        entry: dict[str, Any] = {"baseline": m["baseline"], "train_gamma": m["train_gamma"]}
        for key, gamma in (("at_train", m["train_gamma"]), ("at_max", gammas[-1])):
            if gamma not in gammas:
                entry[key] = None
                continue
            i = gammas.index(gamma)
            diffs = [c[i] - b[i] for c, b in zip(m["rmse_per_seed"], base["rmse_per_seed"], strict=True)]
            t = torch.tensor(diffs, dtype=torch.float64)
            entry[key] = {
                "gamma": gamma,
                "per_seed": diffs,
                "mean": float(t.mean()),
                "std": float(t.std()) if len(diffs) > 1 else 0.0,
            }
        gaps[name] = entry
    return gaps
