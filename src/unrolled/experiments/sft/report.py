"""The SFT family's report: eval token accuracy vs test γ, layerwise loss, violations, multipliers, win rates."""

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

__all__ = ["plot_accuracy", "recipe_table", "report", "summary", "winrate_table"]


def accuracy_table(results: dict[str, Any]) -> str:
    """Eval token accuracy of every method at every test γ, mean ± std over seeds, with the paper's numbers."""
    return gamma_table(results, "token_accuracy_mean", "token_accuracy_std", digits=3)


def _pct(v: float | None) -> str:
    return "failed" if v is None else f"{100 * v:.1f}%"


def winrate_table(results: dict[str, Any]) -> str:
    """Win rate of each method against the baseline, per γ and judge, with its CI and the judge's tallies."""
    rows = []
    labels = {name: m["label"] for name, m in results["methods"].items()}
    published = results.get("published_winrate", {})
    for w in results.get("winrates", []):
        cis = ", ".join(
            "–".join(_pct(v) for v in ci) if None not in ci else "none" for ci in w["ci_per_seed"]
        )
        paper = published.get(str(w["gamma"]))
        rows.append((
            f"{labels.get(w['method'], w['method'])} vs {labels.get(w['baseline'], w['baseline'])}",
            [f"{w['gamma']:g}", w["judge"], _pct(w["rate_mean"]), cis,
             f"{w['wins']}/{w['ties']}/{w['losses']}", str(w["failures"]),
             "" if w["position_bias_mean"] is None else f"{w['position_bias_mean']:+.2f}",
             _pct(paper) if paper is not None else ""],
        ))  # fmt: skip
    head = ["γ", "judge", "win rate", f"{int(100 * (results.get('winrates') or [{}])[0].get('confidence', 0.95))}% CI per seed",
            "wins/ties/losses", "failures", "position bias", "paper"]  # fmt: skip
    return table(head, rows)


def _stress_gamma(results: dict[str, Any]) -> float:
    """The perturbed γ the recipes are compared at: the largest win-rate γ, else the largest test γ."""
    rates = [w["gamma"] for w in results.get("winrates", [])]
    return max(rates) if rates and max(rates) > 0 else results["gammas"][-1]


def recipe_table(results: dict[str, Any]) -> str:
    """One row per method: eval token accuracy at γ = 0 and at the stress γ (with the difference to the
    win-rate baseline), the layers going up at γ = 0, and the win rate against the baseline at both γ (first
    judge). A run tested at γ = 0 alone has no stress columns."""
    gammas = results["gammas"]
    stress = _stress_gamma(results)
    i0, i1 = gammas.index(0.0) if 0.0 in gammas else 0, gammas.index(stress)
    columns = [(i0, gammas[i0])] + ([(i1, stress)] if i1 != i0 else [])
    methods = results["methods"]
    rates = results.get("winrates", [])
    judge = rates[0]["judge"] if rates else None
    baseline = rates[0]["baseline"] if rates else None
    base = methods.get(baseline) if baseline else None
    rows = []
    for name, m in methods.items():
        acc, std = m["token_accuracy_mean"], m["token_accuracy_std"]
        seeds = len(m.get("seeds", results["seeds"]))
        cells = [str(seeds)]
        for i, _ in columns:
            cell = f"{acc[i]:.3f}" + (f" ± {std[i]:.3f}" if seeds > 1 else "")
            if base is not None and name != baseline:
                cell += f" ({acc[i] - base['token_accuracy_mean'][i]:+.3f})"
            cells.append(cell)
        share = m["violation_share"].get(str(gammas[i0]))
        cells.append("—" if share is None else f"{round(share * m['layers'])} of {m['layers']}")
        for _, g in columns:
            row = next(
                (w for w in rates if w["method"] == name and w["gamma"] == g and w["judge"] == judge), None
            )
            cells.append("baseline" if name == baseline else _pct(row["rate_mean"]) if row else "—")
        rows.append((m["label"], cells))
    head = ["seeds", *(f"accuracy γ={g:g}" for _, g in columns), f"layers going up (γ={gammas[i0]:g})",
            *(f"win rate γ={g:g}" for _, g in columns)]  # fmt: skip
    return table(head, rows)


def report(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    """report.md's sections; accuracy_vs_gamma.png and loss_vs_layer.png when ``plt`` is given."""
    cfg = results.get("config", {})
    task, train = cfg.get("task", {}), cfg.get("train", {})
    data, trunc = results.get("data", {}), results.get("truncated", {})
    noise = (
        "ẽ = e + ε, ε ~ N(0, (γσ)²), σ the std of the base model's token embeddings over the training tokens"
        if results.get("noise") == "gaussian"
        else "NEFTune-scaled uniform noise, |ε| ≤ γ / √(T·D)"
    )
    lora = train.get("lora")
    tuning = f"LoRA r = {lora['r']}, α = {lora['alpha']:g}" if lora else "full fine-tuning"
    trunc_text = ", ".join(
        f"{side}: {v['truncated']} of {v['examples']} (longest {v['max_tokens']} tokens)"
        for side, v in trunc.items()
    )
    parts = [
        *heading(results),
        f"- model: `{task.get('model')}`, {tuning}; data: `{task.get('source')}`, {data.get('train', '?')} train "
        f"examples, {data.get('eval', '?')} eval examples, {data.get('winrate', '?')} win-rate prompts (split by "
        f"instruction, seeded)",
        f"- examples longer than {task.get('max_length')} tokens, truncated by TRL: {trunc_text or 'not counted'}",
        f"- noise on the token embeddings: {noise}; trained at γ = {results['train_gamma']:g}",
        f"- training: {train.get('steps')} AdamW steps of {train.get('batch_size')} × "
        f"{train.get('gradient_accumulation')} examples, lr {train.get('lr')}, {train.get('schedule')} schedule; "
        f"seeds {', '.join(map(str, results['seeds']))}",
        "",
        f"## Eval token accuracy vs test perturbation γ ({spread(results)})",
        "",
        accuracy_table(results),
        "",
    ]
    if results.get("published"):
        parts += [f"Paper numbers: {results.get('published_source') or 'the paper'}.", ""]
    parts += [
        "## The recipes side by side (differences to the win-rate baseline in brackets"
        + (f"; win rates by {results['winrates'][0]['judge']}" if results.get("winrates") else "")
        + ")",
        "",
        recipe_table(results),
        "",
    ]
    if results.get("winrates"):
        parts += ["## Win rate against the baseline (each pair judged in both orders; ties count half)", ""]
        parts += [winrate_table(results), ""]
    parts += [
        "## Share of layers whose logit-lens loss does not descend (f_l > f_{l−1}), mean over seeds",
        "",
    ]
    parts += [violation_table(results), ""]
    parts += objective_section(results)
    parts += final_multipliers(results)
    if plt is not None:
        plot_accuracy([results], run_dir / "accuracy_vs_gamma.png", plt)
        plot_layerwise(
            results,
            run_dir / "loss_vs_layer.png",
            plt,
            "layer_loss_mean",
            "eval cross-entropy of the logit lens",
            log=True,  # the embedding's readout (layer 0) is ~100 nats, the last layer's ~2
        )
        parts += [
            "![token accuracy vs γ](accuracy_vs_gamma.png)",
            "",
            "![loss vs layer](loss_vs_layer.png)",
            "",
        ]
    return parts


def plot_accuracy(runs: list[dict[str, Any]], path: Path, plt: Any) -> bool:
    """Eval token accuracy vs γ, mean ± std band per method; the paper's points as crosses."""
    return plot_vs_gamma(
        runs, path, plt, "token_accuracy_mean", "token_accuracy_std", "eval token accuracy",
        "robustness to embedding noise (held-out instructions; solid: constrained)",
    )  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    text = f"{results['name']} — eval token accuracy vs test perturbation γ, {spread(results)}:\n{accuracy_table(results)}"
    text += "\nthe recipes side by side:\n" + recipe_table(results)
    warnings = infeasibility_lines(results)
    if warnings:
        text += "\n" + "\n".join(warnings)
    return text
