"""The descent audit of any pretrained Hugging Face model (``task.kind: audit``; ``unrolled audit``).

No training: a sequence classifier's own head, or a causal LM's logit lens, reads every layer on some texts;
the audit reports the loss and accuracy after every layer and the share of layers where the loss goes up
(the layerwise descent the constrained-learning paper enforces, measured on a model trained without it).
A unit is one seed (the seed picks the texts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unrolled.experiments.aggregate import header
from unrolled.experiments.audit.config import AuditExperiment, AuditTask
from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.registry import register_family
from unrolled.extras import Requirement
from unrolled.report import heading, integer_axis, save, spread, table

__all__ = ["AuditExperiment", "AuditFamily", "AuditTask", "aggregate"]


def aggregate(cfg: AuditExperiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of the loss and accuracy after every layer, and of the share of ascending layers."""
    loss = torch.tensor([r["layer_loss"] for r in records], dtype=torch.float64)
    acc = torch.tensor([r["layer_accuracy"] for r in records], dtype=torch.float64)
    first = records[0]
    return {
        **header(cfg, "descent audit"),
        "model": cfg.task.model,
        "kind": first["kind"],
        "data": cfg.task.data,
        "seeds": list(cfg.seeds),
        "layers": first["layers"],
        "examples": first.get("examples"),
        "tokens": first.get("tokens"),
        "layer_loss_mean": loss.mean(0).tolist(),
        "layer_accuracy_mean": acc.mean(0).tolist(),
        "layer_loss_per_seed": loss.tolist(),
        "violation_share": sum(r["violation_share"] for r in records) / len(records),
        "labels": first.get("labels"),
    }


def report(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    """report.md: the per-layer table and loss_vs_layer.png."""
    what = "next-token" if results["kind"] == "causal_lm" else "classification"
    size = f"{results['tokens']:,} tokens" if results.get("tokens") else f"{results['examples']} texts"
    parts = [
        *heading(results),
        f"- model: `{results['model']}` ({results['kind']}, {results['layers']} layers); readout: "
        + (
            "the logit lens (final norm + LM head) on every layer"
            if results["kind"] == "causal_lm"
            else "its own classification head on every layer"
        ),
        f"- data: `{results['data']}`, {size}; seeds {', '.join(map(str, results['seeds']))}",
        f"- layers whose loss goes up (f_l > f_(l−1)): {results['violation_share']:.2f} of {results['layers']}",
        "",
        f"## {what.capitalize()} loss and accuracy after every layer ({spread(results)})",
        "",
        summary(results),
        "",
    ]
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        layers = list(range(results["layers"] + 1))
        ax.plot(layers, results["layer_loss_mean"], "-o", ms=3, color="C0", label="cross-entropy")
        integer_axis(ax.xaxis)
        ax.set_xlabel("layer l (0: the embeddings read out)")
        ax.set_ylabel(f"{what} cross-entropy", color="C0")
        twin = ax.twinx()
        twin.plot(layers, results["layer_accuracy_mean"], "--s", ms=3, color="C1", label="accuracy")
        twin.set_ylabel("accuracy", color="C1")
        ax.set_title(f"descent audit of {results['model']}", fontsize=9)
        ax.grid(alpha=0.3)
        save(fig, run_dir / "loss_vs_layer.png", plt)
        parts += ["![loss and accuracy vs layer](loss_vs_layer.png)", ""]
    return parts


def summary(results: dict[str, Any]) -> str:
    rows = [
        (f"layer {l}", [f"{loss:.3f}", f"{acc:.3f}"])
        for l, (loss, acc) in enumerate(
            zip(results["layer_loss_mean"], results["layer_accuracy_mean"], strict=True)
        )
    ]
    return f"{results['name']} — loss and accuracy after every layer:\n" + table(
        ["cross-entropy", "accuracy"], rows
    ).replace("| method |", "| readout of |", 1)


class AuditFamily(ExperimentFamily):
    """One unit per seed: read every layer of the model out on the seed's texts."""

    kind = "audit"
    config_class = AuditExperiment
    title = "descent audit"

    def requirements(self, cfg: AuditExperiment) -> list[Requirement]:
        return [Requirement("transformers", "a descent audit (a pretrained model)")]

    def plan(self, cfg: AuditExperiment) -> list[Unit]:
        return [Unit("audit", seed, None, cfg.task, steps=0) for seed in cfg.seeds]

    def run_unit(self, unit: Unit, data: Any, ctx: UnitContext) -> dict[str, Any]:
        from unrolled.experiments.audit.unit import run_unit  # the hf extra: imported when an audit runs

        return run_unit(unit, data, ctx)

    aggregate = staticmethod(aggregate)
    report = staticmethod(report)
    summary = staticmethod(summary)


register_family(AuditFamily())
