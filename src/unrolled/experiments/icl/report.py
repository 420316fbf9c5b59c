"""The report of an in-context learning experiment: tables (``report.md``) and the figures of ``plots``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unrolled.experiments.icl import plots
from unrolled.report import fmt, heading, table

BASELINE_LABELS = {
    "least_squares": "least squares (min-norm)",
    "ridge": "ridge (λ tuned)",
    "bayes": "Bayes (noise known)",
    "lasso": "Lasso (α tuned)",
    "newton": "iterative Newton",
    "cg": "conjugate gradient",
    "gd": "GD (fixed step)",
    "gd_tuned": "GD (step tuned per k)",
}


def ci(entry: dict[str, Any] | None, digits: int = 3, prompt: bool = False) -> str:
    """``0.123 ± 0.004`` (seed interval; with ``prompt``, the prompt interval in brackets)."""
    if entry is None or entry.get("mean") is None:
        return "—"
    text = fmt(entry["mean"], digits)
    if entry.get("ci") is not None:
        text += f" ± {fmt(entry['ci'], digits)}"
    if prompt and entry.get("prompt_ci") is not None:
        text += f" [±{fmt(entry['prompt_ci'], digits)}]"
    return text


def iteration_state(results: dict[str, Any], name: str) -> int:
    """The state of an iterative baseline shown beside the learners: as many iterations as their depth."""
    layers = max((m["layers"] for m in results["methods"].values()), default=1)
    return layers if name in ("newton", "cg") else -1


def headline_rows(results: dict[str, Any], split: str) -> list[tuple[str, list[str]]]:
    rows = []
    for name, entry in results["learners"].items():
        s = entry["splits"][split]
        rows.append((results["methods"][name]["label"], [ci(s["last"]), ci(s["all"])]))
    for name, b in results["baselines"].get(split, {}).items():
        if name in ("gd", "gd_tuned"):
            continue
        k = iteration_state(results, name)
        k = min(k, len(b["last"]) - 1)  # no more iterations than were run
        label = BASELINE_LABELS.get(name, name) + (f", k = {k}" if k >= 0 else "")
        rows.append((label, [fmt(b["last"][k], 3), fmt(b["all"][k], 3)]))
    return rows


def bar_lines(results: dict[str, Any]) -> list[str]:
    bar = results.get("bar") or {}
    if not bar:
        return []
    lines = ["## The bar: ERM learners within 0.05 of least squares at every n ≥ 2d (test)", ""]
    for name, b in bar.items():
        verdict = "met" if b["met"] else "NOT met"
        lines.append(
            f"- {results['methods'][name]['label']}: largest excess over least squares at n = "
            f"{b['n'][0]}…{b['n'][-1]}: {fmt(b['max_excess'], 3)} ({verdict})"
        )
    return [*lines, ""]


def reading_lines(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, entry in results["learners"].items():
        reading = entry.get("reading")
        if reading is None:
            continue
        for kind in ("probe", "readout"):
            cells = [", ".join(str(k) for k in reading[kind][m]["best"][1:]) for m in ("newton", "cg", "gd")]
            rows.append((f"{results['methods'][name]['label']} ({kind})", cells))
    if not rows:
        return []
    return [
        "## Reading the layers (Fu et al.): best-matching iteration count of layers 1..L",
        "",
        "Cosine similarity of residuals, averaged over test prompts (mean similarity over seeds); *probe*: a",
        "linear probe fitted per layer on held-out prompts, *readout*: the model's own final norm and read-out.",
        "",
        table(["Newton k", "CG k", "GD k (fixed step)"], rows),
        "",
    ]


def shift_lines(results: dict[str, Any]) -> list[str]:
    gaps = results.get("gaps") or {}
    shifted = [s for s, v in results["splits"].items() if v["family"] is not None]
    if not gaps or not shifted:
        return []
    lines = [
        "## Shifts: layerwise method − its ERM baseline (normalised error at the last pair)",
        "",
        "Mean over seeds ± the 95% t interval over seeds (each seed a separately trained pair of models, the same",
        "prompts); in brackets the 95% interval the test prompts alone allow (unpaired, so an upper bound). Negative:",
        "better than ERM.",
        "",
    ]
    names = list(gaps)
    iterative = [(b, iteration_state(results, b)) for b in ("cg", "newton")]
    cols = [
        "ERM error",
        *[f"{results['methods'][n]['label']} − ERM" for n in names],
        "least squares",
        *[f"{BASELINE_LABELS[b]}, k = {k}" for b, k in iterative],
    ]
    rows = []
    for split in ["test", *shifted]:
        first = gaps[names[0]]
        erm = results["learners"][first["baseline"]]["splits"][split]["last"]
        cells = [ci(erm)]
        for n in names:
            cells.append(ci(gaps[n]["splits"][split]["last"], prompt=True))
        base = results["baselines"].get(split, {})
        ls = base.get("least_squares")
        cells.append(fmt(ls["last"][0], 3) if ls else "—")
        for b, k in iterative:
            cells.append(fmt(base[b]["last"][min(k, len(base[b]["last"]) - 1)], 3) if b in base else "—")
        rows.append((split, cells))
    text = table(cols, rows).replace("| method |", "| split |", 1)
    return [*lines, text, ""]


def report(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    parts = heading(results)
    seeds = ", ".join(str(s) for s in results["seeds"])
    parts += [
        f"Seeds: {seeds}. Errors are squared errors / d (Garg et al.), on fresh test prompts; ± is the 95% "
        "interval over seeds.",
        "",
        "## In distribution (test)",
        "",
        table(["error at the last pair", "error averaged over the pairs"], headline_rows(results, "test")),
        "",
        *bar_lines(results),
    ]
    if plt is not None:
        for name, draw in plots.FIGURES.items():
            path = run_dir / f"{name}.png"
            if draw(results, path, plt):
                parts += [f"![{name}]({path.name})", ""]
    parts += reading_lines(results)
    parts += shift_lines(results)
    return parts


def summary(results: dict[str, Any]) -> str:
    rows = headline_rows(results, "test")
    return f"{results['name']}: normalised test error\n" + table(["last pair", "all pairs"], rows)
