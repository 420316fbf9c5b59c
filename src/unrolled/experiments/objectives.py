"""What every family records and reports about a method's layerwise objective: which objective it trained
with, the multipliers at the end, the constraints found infeasible, and the task loss's share of the loss.

Units put ``trainer.objective.report()`` in their record under ``objective``; :func:`objective_entry` turns
a method's records into the fields of its ``results.json`` entry; :func:`objective_section` is the report's
table and :func:`infeasibility_lines` the warning lines of the report and of the CLI summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unrolled.report import table

__all__ = [
    "infeasibility_lines",
    "objective_entry",
    "objective_kind",
    "objective_record",
    "objective_section",
]


def objective_record(objective: Any, depth: int) -> dict[str, Any]:
    """What a unit records of its objective at the end of training: its report (infeasible constraints,
    calibration) and the task loss's share of the loss at the final weights."""
    return {"task_weight": objective.task_weight(depth), **objective.report()}


def objective_kind(method: Any) -> str:
    """``constrained``, ``early_exit`` or ``erm`` for a method config (``base`` for one that is not trained)."""
    if getattr(method, "finetune", True) is False:
        return "base"
    if getattr(method, "constraints", None) is not None:
        return "constrained"
    return "early_exit" if getattr(method, "early_exit", None) is not None else "erm"


def objective_entry(method: Any, records: Sequence[dict[str, Any]], timing: bool = True) -> dict[str, Any]:
    """The objective's fields of a method's ``results.json`` entry, from its unit records (one per seed);
    with ``timing``, ``step_seconds``: the mean training seconds per optimizer step (a measurement, not a
    result)."""
    reports = [r.get("objective") or {} for r in records]
    entry: dict[str, Any] = {"objective": objective_kind(method)}
    if any("task_weight" in rep for rep in reports):
        entry["task_weight_per_seed"] = [rep.get("task_weight") for rep in reports]
    if any("infeasible_layers" in rep for rep in reports):
        entry["infeasible_per_seed"] = [rep.get("infeasible_layers", []) for rep in reports]
        entry["infeasible_status_per_seed"] = [rep.get("infeasible_status", {}) for rep in reports]
    if any("too_short" in rep for rep in reports):
        entry["too_short_per_seed"] = [rep.get("too_short") for rep in reports]
    if any("calibration" in rep for rep in reports):
        entry["calibration_per_seed"] = [rep.get("calibration") for rep in reports]
    timed = [
        r for r in records if isinstance(r.get("train_seconds"), int | float) and (r.get("steps") or 0) > 0
    ]
    if timing and timed:
        entry["step_seconds"] = sum(r["train_seconds"] / r["steps"] for r in timed) / len(timed)
    return entry


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def objective_section(results: dict[str, Any]) -> list[str]:
    """A report section: per method, its objective, Σλ and max λ at the end, the infeasible constraints, the
    task loss's share of the loss, and the training time per step (means over seeds); [] if no method has a
    layerwise objective."""
    methods = results["methods"]
    if not any(m.get("objective") in ("constrained", "early_exit") for m in methods.values()):
        return []
    rows = []
    for m in methods.values():
        lam = m.get("multipliers_per_seed")
        sums = _mean([sum(v) for v in lam]) if lam else None
        peak = _mean([max(v) for v in lam]) if lam else None
        infeasible = m.get("infeasible_per_seed")
        flagged = "—"
        if infeasible is not None:
            counts = [len(v) for v in infeasible]
            layers = sorted({l for v in infeasible for l in v})
            flagged = f"{_mean(counts):.1f}" + (f" ({', '.join(map(str, layers))})" if layers else "")
        weight = _mean(m.get("task_weight_per_seed") or [])
        step = m.get("step_seconds")
        rows.append((
            m["label"],
            [m.get("objective", "—"), "—" if sums is None else f"{sums:.3g}", "—" if peak is None else f"{peak:.3g}",
             flagged, "—" if weight is None else f"{weight:.2f}", "—" if step is None else f"{step:.2f}"],
        ))  # fmt: skip
    head = [
        "objective",
        "Σλ at the end",
        "max λ",
        "infeasible constraints (layers)",
        "task weight",
        "s / step",
    ]
    lines = [
        "## The layerwise objective at the end of training (mean over seeds)",
        "",
        "Task weight: the share of the loss's layer weights that the task loss holds (1 / Σ_l |w_l|, "
        "docs/CONSTRAINTS.md); a constraint is infeasible when its slack stayed positive over the last dual "
        "steps.",
        "",
        table(head, rows),
        "",
    ]
    return lines + infeasibility_lines(results)


def infeasibility_lines(results: dict[str, Any]) -> list[str]:
    """One warning line per method with constraints found infeasible (any seed), naming the layers and how
    their multipliers moved, and one per method whose run was too short for a verdict; [] if none."""
    lines = []
    for m in results["methods"].values():
        statuses = m.get("infeasible_status_per_seed") or []
        merged: dict[str, set[str]] = {}
        for per_seed in statuses:
            for layer, status in per_seed.items():
                merged.setdefault(layer, set()).add(status)
        if not merged:
            continue
        layers = ", ".join(
            f"{l} ({'/'.join(sorted(s))})" for l, s in sorted(merged.items(), key=lambda x: int(x[0]))
        )
        weight = _mean(m.get("task_weight_per_seed") or [])
        tail = f"; the task loss holds {weight:.0%} of the loss" if weight is not None else ""
        lines.append(f"- **{m['label']}**: infeasible constraints on layers {layers}{tail}.")
    for m in results["methods"].values():
        short = [s for s in m.get("too_short_per_seed") or [] if s]
        if short:
            lines.append(
                f"- **{m['label']}**: too short to tell whether a constraint is infeasible ({short[0]})."
            )
    if lines:
        lines = ["Infeasible constraints (docs/CONSTRAINTS.md lists the remedies):", "", *lines, ""]
    return lines
