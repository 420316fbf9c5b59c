"""The text family's report: accuracy vs test γ, layerwise test loss, non-descending layers, multipliers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unrolled.experiments.objectives import infeasibility_lines, objective_section
from unrolled.report import (
    final_multipliers,
    gamma_table,
    heading,
    plot_layerwise,
    plot_vs_gamma,
    spread,
    table,
    violation_table,
)


def accuracy_table(results: dict[str, Any]) -> str:
    """Test accuracy of every method at every test γ, mean ± std over seeds, with the paper's numbers."""
    return gamma_table(results, "accuracy_mean", "accuracy_std", digits=3)


def layer_table(results: dict[str, Any], gamma: float) -> str:
    """Mean test loss of every layer's readout at one γ."""
    rows = []
    depth = max(len(m["layer_loss_mean"][str(gamma)]) for m in results["methods"].values())
    for m in results["methods"].values():
        curve = m["layer_loss_mean"][str(gamma)]
        rows.append((m["label"], [f"{v:.3f}" for v in curve] + [""] * (depth - len(curve))))
    return table([f"f_{l}" for l in range(depth)], rows)


def recipe_table(results: dict[str, Any], layer: int = 3) -> str:
    """One row per method: test accuracy at γ = 0 and at the largest γ (mean ± std over seeds), the final
    test loss f_L and its ratio to the first ERM method's, and the loss and accuracy of layer ``layer``'s
    readout at γ = 0 (how early the model descends)."""
    gammas, seeds = results["gammas"], len(results["seeds"])
    clean = str(gammas[0])
    erm = next((m for m in results["methods"].values() if m.get("objective") == "erm"), None)
    rows = []
    for m in results["methods"].values():
        acc, std = m["accuracy_mean"], m["accuracy_std"]
        curve, layer_acc = m["layer_loss_mean"][clean], m["layer_accuracy_mean"][clean]
        ratio = "" if erm is None else f" ({curve[-1] / erm['layer_loss_mean'][clean][-1]:.2f}× ERM)"
        rows.append((
            m["label"],
            [f"{acc[0]:.3f}" + (f" ± {std[0]:.3f}" if seeds > 1 else ""),
             f"{acc[-1]:.3f}" + (f" ± {std[-1]:.3f}" if seeds > 1 else ""),
             f"{curve[-1]:.3f}{ratio}", f"{curve[layer]:.3f}" if len(curve) > layer else "—",
             f"{layer_acc[layer]:.2f}" if len(layer_acc) > layer else "—"],
        ))  # fmt: skip
    head = [f"accuracy γ={gammas[0]:g}", f"accuracy γ={gammas[-1]:g}", f"final test loss f_L (γ={gammas[0]:g})",
            f"f_{layer}", f"accuracy of layer {layer}"]  # fmt: skip
    return table(head, rows)


def report(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    """report.md's sections; accuracy_vs_gamma.png and loss_vs_layer.png when ``plt`` is given."""
    cfg = results.get("config", {})
    task, train = cfg.get("task", {}), cfg.get("train", {})
    data = results.get("data", {})
    gammas = results["gammas"]
    noise = (
        "x̃ = e + ε, ε ~ N(0, (γσ)²), σ the std of the clean token embeddings of the training texts"
        if results.get("noise") == "gaussian"
        else "NEFTune-scaled uniform noise, |ε| ≤ γ / √(T·D)"
    )
    parts = [
        *heading(results),
        f"- data: `{task.get('source')}`, {data.get('train', '?')} train / {data.get('validation', '?')} "
        f"validation / {data.get('test', '?')} test texts (seeded, stratified split), at most "
        f"{task.get('max_length')} tokens",
        f"- noise on the token embeddings: {noise}; trained at γ = {results['train_gamma']:g}",
        f"- training: {train.get('steps')} AdamW steps of {train.get('batch_size')} texts, lr {train.get('lr')} "
        f"(a method's own lr where it sets one), {train.get('schedule')} schedule; seeds "
        f"{', '.join(map(str, results['seeds']))}",
        "",
        f"## Test accuracy vs test perturbation γ ({spread(results)}; held-out texts)",
        "",
        accuracy_table(results),
        "",
    ]
    if results.get("published"):
        parts += [f"Paper numbers: {results.get('published_source') or 'the paper'}.", ""]
    parts += [f"## The methods side by side ({spread(results)})", "", recipe_table(results), ""]
    for g in dict.fromkeys((gammas[0], gammas[-1])):
        parts += [
            f"## Test loss of every layer's readout at γ = {g:g} (mean over seeds)",
            "",
            layer_table(results, g),
            "",
        ]
    parts += ["## Share of layers whose loss does not descend (f_l > f_{l−1}), mean over seeds", ""]
    parts += [violation_table(results), ""]
    parts += objective_section(results)
    parts += final_multipliers(results)
    if plt is not None:
        plot_accuracy(
            results if isinstance(results, list) else [results], run_dir / "accuracy_vs_gamma.png", plt
        )
        plot_layerwise(
            results,
            run_dir / "loss_vs_layer.png",
            plt,
            "layer_loss_mean",
            "test cross-entropy of the readout",
        )
        parts += ["![accuracy vs γ](accuracy_vs_gamma.png)", "", "![loss vs layer](loss_vs_layer.png)", ""]
    return parts


def plot_accuracy(runs: list[dict[str, Any]], path: Path, plt: Any) -> bool:
    """Test accuracy vs γ, mean ± std band per method; the paper's points as crosses."""
    return plot_vs_gamma(
        runs, path, plt, "accuracy_mean", "accuracy_std", "test accuracy",
        "robustness to embedding noise (held-out texts; solid: constrained)",
    )  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    title = f"{results['name']} — test accuracy vs test perturbation γ, {spread(results)}:"
    warnings = "\n".join(infeasibility_lines(results))
    return f"{title}\n{accuracy_table(results)}" + (f"\n{warnings}" if warnings else "")
