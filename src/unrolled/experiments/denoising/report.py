"""The video-denoising family's report: RMSE vs γ, layerwise MSE, non-descending layers, multipliers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unrolled.experiments.denoising.robustness import robustness_section
from unrolled.experiments.objectives import infeasibility_lines
from unrolled.report import (
    final_multipliers,
    gamma_table,
    heading,
    plot_layerwise,
    plot_vs_gamma,
    spread,
    violation_table,
)


def denoising_table(results: dict[str, Any], gammas: Sequence[float] | None = None) -> str:
    """RMSE (0–255) of every method at every test γ, mean ± std over seeds, with the paper's numbers."""
    return gamma_table(results, "rmse_mean", "rmse_std", digits=1, gammas=gammas)


def report(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    """report.md's sections; rmse_vs_gamma.png and loss_vs_layer.png when ``plt`` is given."""
    cfg = results.get("config", {})
    task, train = cfg.get("task", {}), cfg.get("train", {})
    parts = heading(results)
    parts += [
        f"- data: train videos {', '.join(task.get('train_sources', []))}; held-out test videos "
        f"{', '.join(task.get('test_sources', []))} (split by source video); clips of {task.get('frames')} frames, "
        f"{task.get('crop')}×{task.get('crop')} px, {'grayscale' if task.get('grayscale') else 'colour'}",
        f"- noise: x̃ = x + ε, ε ~ N(μ, (γσ)²), σ the training pixel std; trained at γ = {results['train_gamma']:g}"
        + (" (unless a method says otherwise)" if results.get("gaps") else ""),
        f"- training: {train.get('steps')} {train.get('optimizer')} steps, lr {train.get('lr')}, "
        f"batch {train.get('batch_size')} clips; seeds {', '.join(map(str, results['seeds']))}",
        f"- unreadable video files skipped (task.skip_bad): {len(results.get('skipped_files', []))}"
        + "".join(f"\n  - {path}: {reason}" for path, reason in results.get("skipped_files", [])),
        "",
        f"## Test RMSE (0–255) vs test perturbation γ ({spread(results)}; held-out videos)",
        "",
        denoising_table(results),
        "",
    ]
    if results.get("published"):
        parts += [f"Paper numbers: {results.get('published_source') or 'the paper'}.", ""]
    parts += [
        "## Share of layers whose loss does not descend (f_l > f_{l−1}), mean over seeds",
        "",
        violation_table(results),
        "",
    ]
    parts += robustness_section(results, run_dir, plt)
    parts += infeasibility_lines(results)
    parts += final_multipliers(results)
    parts += step_times(results)
    if plt is not None:
        plot_rmse_vs_gamma([results], run_dir / "rmse_vs_gamma.png", plt)
        plot_layers(results, run_dir / "loss_vs_layer.png", plt)
        parts += ["![RMSE vs γ](rmse_vs_gamma.png)", "", "![loss vs layer](loss_vs_layer.png)", ""]
    return parts


def step_times(results: dict[str, Any]) -> list[str]:
    """Training time per step of each method, and its ratio to the first unconstrained method's."""
    methods = results["methods"]
    timed = {k: m["step_seconds"] for k, m in methods.items() if m.get("step_seconds")}
    if not timed:
        return []
    base = next((k for k, m in methods.items() if not m["constrained"] and k in timed), None)
    lines = ["## Training time per step (mean over seeds trained without a resume; workers share the CPU)", "",
             "| method | ms / step | × " + (base or "—") + " |", "|---|---|---|"]  # fmt: skip
    for k, sec in timed.items():
        ratio = f"{sec / timed[base]:.2f}" if base else "—"
        lines.append(f"| {methods[k]['label']} | {1e3 * sec:.1f} | {ratio} |")
    return [*lines, ""]


def summary(results: dict[str, Any]) -> str:
    title = f"{results['name']} — test RMSE (0–255) vs test perturbation γ, {spread(results)}:"
    warnings = "\n".join(infeasibility_lines(results))
    return f"{title}\n{denoising_table(results)}" + (f"\n{warnings}" if warnings else "")


def plot_rmse_vs_gamma(runs: Sequence[dict[str, Any]], path: Path, plt: Any) -> bool:
    """Test RMSE vs γ, mean ± std band per method; the paper's points as crosses."""
    return plot_vs_gamma(
        runs, path, plt, "rmse_mean", "rmse_std", "test RMSE (0–255)",
        "robustness to input noise (held-out videos; solid: constrained)",
    )  # fmt: skip


def plot_layers(results: dict[str, Any], path: Path, plt: Any) -> None:
    """Layerwise test MSE of every method, at the training noise level and at the largest test level."""
    plot_layerwise(results, path, plt, "layer_mse_mean", "test MSE of the readout", log=True)
