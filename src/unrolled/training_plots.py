"""The plots every family's report gets from a run's ``metrics.jsonl``: training curves and multipliers.

Split from :mod:`unrolled.report` (the tables and the plots of results); both need matplotlib only when called.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from unrolled.report import integer_axis, save

__all__ = ["plot_multipliers", "plot_training", "training_plots"]


def _metric_lines(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a line cut short by a kill is skipped)."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return []
    out = []
    for line in metrics.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_training(run_dir: Path, path: Path, plt: Any) -> bool:
    """Training loss vs step of every trained method (at its largest depth), mean over seeds. False if none."""
    curves: dict[tuple[str, int | None], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in _metric_lines(run_dir):
        if "loss" in rec and "step" in rec:
            curves[(rec["method"], rec.get("depth"))][rec["step"]].append(rec["loss"])
    if not curves:
        return False
    deepest: dict[str, int | None] = {}
    for method, depth in curves:
        if method not in deepest or (depth or 0) > (deepest[method] or 0):
            deepest[method] = depth
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, depth in deepest.items():
        points = sorted(curves[(method, depth)].items())
        steps = [s for s, _ in points]
        mean = [math.log(max(sum(v) / len(v), 1e-300)) for _, v in points]
        ax.plot(steps, mean, label=method if depth is None else f"{method} (L={depth})")
    integer_axis(ax.xaxis)
    ax.set_xlabel("training step")
    ax.set_ylabel("log training loss (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("training curves", fontsize=9)
    save(fig, path, plt)
    return True


def training_plots(run_dir: Path, plt: Any) -> list[str]:
    """The plots every family's report gets from ``metrics.jsonl``: training curves and, for constrained
    training, the multipliers; the Markdown lines that show them."""
    parts = []
    if plot_training(run_dir, run_dir / "training.png", plt):
        parts += ["![training loss](training.png)", ""]
    if plot_multipliers(run_dir, run_dir / "multipliers.png", plt):
        parts += ["![multipliers over training](multipliers.png)", ""]
    return parts


def plot_multipliers(run_dir: Path, path: Path, plt: Any) -> bool:
    """λ_l over training (first seed) for every constrained method, the constraints found infeasible dashed
    (a cross where they were first flagged); False if there are none."""
    series: dict[str, list[tuple[int, list[float]]]] = defaultdict(list)
    flagged: dict[str, dict[int, int]] = defaultdict(dict)  # layer -> first step it was found infeasible
    first_seed: dict[str, int] = {}
    for rec in _metric_lines(run_dir):
        if "multipliers" not in rec:
            continue
        key = f"{rec['method']}" + (f" L={rec['depth']}" if rec.get("depth") is not None else "")
        first_seed.setdefault(key, rec["seed"])
        if rec["seed"] == first_seed[key]:
            series[key].append((rec["step"], rec["multipliers"]))
            for layer in rec.get("infeasible", []):
                flagged[key].setdefault(layer, rec["step"])
    if not series:
        return False
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.4), squeeze=False)
    for ax, (key, points) in zip(axes[0], sorted(series.items()), strict=True):
        points.sort()
        steps = [s for s, _ in points]
        for layer in range(len(points[0][1])):
            values = [p[layer] for _, p in points]
            if layer + 1 in flagged[key]:  # infeasible: dashed, with a cross where it was first flagged
                (line,) = ax.plot(steps, values, "--", lw=1.6, label=f"λ_{layer + 1} (infeasible)")
                at = steps.index(flagged[key][layer + 1])
                ax.plot([steps[at]], [values[at]], "x", ms=7, color=line.get_color())
            else:
                ax.plot(steps, values, lw=1.2, label=f"λ_{layer + 1}")
        ax.set_title(key, fontsize=9)
        integer_axis(ax.xaxis)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("multiplier")
    axes[0][0].legend(fontsize=6, ncol=2)
    save(fig, path, plt)
    return True
