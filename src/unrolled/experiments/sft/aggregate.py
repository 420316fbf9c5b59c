"""``results.json`` of an SFT experiment: token accuracy per test γ, layerwise loss, violations, win rates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from unrolled.experiments.aggregate import header, mean_std, published_at
from unrolled.experiments.objectives import objective_entry
from unrolled.experiments.sft.config import WINRATE_UNIT, SFTExperiment

__all__ = ["aggregate", "winrate_rows"]


def _mean(values: Any) -> float | None:
    """The mean of the values that are not None (None if there are none: a judge that failed everywhere)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def merge_errors(rows: Sequence[dict[str, Any]], most: int = 3) -> list[list[Any]]:
    """The ``most`` most frequent failure messages over rows' ``errors`` ([message, count] pairs)."""
    counts: dict[str, int] = {}
    for row in rows:
        for message, count in row.get("errors", []):
            counts[message] = counts.get(message, 0) + count
    return [[m, c] for m, c in sorted(counts.items(), key=lambda kv: -kv[1])[:most]]


def winrate_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, γ, judge): the rate and CI of each seed, and their mean (pooled failures)."""
    rows: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in records:
        for c in r.get("comparisons", []):
            rows.setdefault((c["method"], float(c["gamma"]), c["judge"]), []).append(c)
    out = []
    for (method, gamma, judge), comps in rows.items():
        rates = [c["rate"] for c in comps if c["rate"] is not None]
        out.append({
            "method": method, "baseline": comps[0]["baseline"], "gamma": gamma, "judge": judge,
            "rate_mean": _mean(rates),
            "rate_per_seed": [c["rate"] for c in comps],
            "ci_per_seed": [[c["ci_low"], c["ci_high"]] for c in comps],
            "soft_rate_mean": _mean(c["soft_rate"] for c in comps),
            "position_bias_mean": _mean(c["position_bias"] for c in comps),
            "wins": sum(c["wins"] for c in comps), "ties": sum(c["ties"] for c in comps),
            "losses": sum(c["losses"] for c in comps), "failures": sum(c["failures"] for c in comps),
            "n": sum(c["n"] for c in comps), "confidence": comps[0]["confidence"],
            "errors": merge_errors(comps),
        })  # fmt: skip
    return sorted(out, key=lambda r: (r["judge"], r["method"], r["gamma"]))


def aggregate(cfg: SFTExperiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method: token accuracy per γ (mean ± std over seeds), layerwise loss per γ, violation share, the
    multipliers, truncation and generation costs; then every win rate with its judge."""
    gammas = [str(g) for g in cfg.perturbation.test_gammas]
    published_gammas = sorted({float(g) for values in (cfg.published or {}).values() for g in values})
    trained = [r for r in records if r["method"] != WINRATE_UNIT]
    first = trained[0] if trained else {}
    out: dict[str, Any] = {
        **header(cfg, "constrained SFT"),
        "gammas": [float(g) for g in gammas],
        "train_gamma": cfg.perturbation.train_gamma,
        "noise": cfg.perturbation.kind,
        "seeds": list(cfg.seeds),
        "data": first.get("data", {}),
        "truncated": first.get("truncated", {}),
        "methods": {},
        "published": published_at(cfg.published, published_gammas),
        "published_gammas": published_gammas,
        "published_winrate": {str(k): v for k, v in (cfg.published_winrate or {}).items()},
        "published_source": cfg.published_source,
        "winrates": winrate_rows(records),
    }
    for m in cfg.methods:
        recs = [r for r in trained if r["method"] == m.name]
        if not recs:
            continue
        acc_mean, acc_std = mean_std([[r["eval"][g]["token_accuracy"] for g in gammas] for r in recs])
        entry: dict[str, Any] = {
            "label": m.label or m.name,
            "seeds": [r["seed"] for r in recs],
            "constrained": m.constraints is not None,
            **objective_entry(m, recs),
            "alpha": m.constraints.alpha if m.constraints is not None else None,
            "readout_token_fraction": m.readout_token_fraction,
            "token_accuracy_mean": acc_mean,
            "token_accuracy_std": acc_std,
            "token_accuracy_per_seed": [[r["eval"][g]["token_accuracy"] for g in gammas] for r in recs],
            "loss_mean": [float(np.mean([r["eval"][g]["loss"] for r in recs])) for g in gammas],
            "layer_loss_mean": {
                g: torch.tensor([r["eval"][g]["layer_loss"] for r in recs], dtype=torch.float64)
                .mean(0)
                .tolist()
                for g in gammas
                if all("layer_loss" in r["eval"][g] for r in recs)
            },
            # exiting outright after layer l (older runs did not record it)
            "layer_token_accuracy_mean": {
                g: np.mean([r["eval"][g]["layer_token_accuracy"] for r in recs], axis=0).tolist()
                for g in gammas
                if all("layer_token_accuracy" in r["eval"][g] for r in recs)
            },
            "violation_share": {
                g: float(np.mean([r["eval"][g]["violation_share"] for r in recs]))
                for g in gammas
                if all("violation_share" in r["eval"][g] for r in recs)
            },
            "train_seconds": [r["train_seconds"] for r in recs],
            "final_train_loss": [r["final_train_loss"] for r in recs],
            "parameters": recs[0]["parameters"],
            "trainable_parameters": recs[0]["trainable_parameters"],
            "layers": recs[0]["layers"],
            "generation": [r.get("generation") for r in recs],
        }
        if "multipliers" in recs[0]:
            entry["multipliers_per_seed"] = [r["multipliers"] for r in recs]
        out["methods"][m.name] = entry
    return out
