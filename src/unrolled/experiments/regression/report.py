"""The regression family's report: log loss vs depth tables and plots, shifts, tuned step sizes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unrolled.report import (
    fmt,
    heading,
    mean_std,
    paper_row,
    plot_loss_vs_layer,
    save,
    spread,
    table,
)


def split_title(split: str) -> str:
    if split == "train":
        return "in-sample: the training batch the models were fit on"
    return "held-out: fresh prompts from the training distribution"


def markdown_table(results: dict[str, Any], split: str) -> str:
    """Mean ± std over seeds of the log loss at each depth, with the paper's numbers beside ours."""
    seeds = len(results["seeds"])
    published = results.get("published", {})
    rows: list[tuple[str, Sequence[str]]] = []
    for name, m in results["methods"].items():
        if split not in m:
            continue
        mean, std = m[split]["log_loss_mean"], m[split]["log_loss_std"]
        div = m[split].get("diverged_seeds") or [0] * len(mean)
        cells = [
            mean_std(a, b, seeds) + (f" ({k} diverged)" if k else "")
            for a, b, k in zip(mean, std, div, strict=True)
        ]
        rows += [(m["label"], cells), *paper_row(m["label"], published.get(name))]
    return table([f"L={L}" for L in results["depths"]], rows)


def describe(results: dict[str, Any]) -> list[str]:
    """The task, training and evaluation in a few lines (from the saved config)."""
    cfg = results.get("config", {})
    task, train, ev = cfg.get("task", {}), cfg.get("train", {}), cfg.get("eval", {})
    lines = []
    if task:
        lines.append(
            f"- task: in-context linear regression, d = {task.get('d')}, n = {task.get('n')}, covariance "
            f"`{task.get('covariance')}`, variance σ² = {task.get('variance')}, label noise {task.get('label_noise')}"
        )
    if train:
        lines.append(
            f"- training: protocol `{train.get('protocol')}`, {train.get('steps')} {train.get('optimizer')} steps, "
            f"lr {train.get('lr')}, batch {train.get('batch_size')} prompts"
            + (
                f", resampled every {train.get('resample_every')} steps"
                if train.get("protocol") == "online"
                else ""
            )
            + (f", per-matrix gradient clip {train.get('clip')}" if train.get("clip") else "")
        )
    lines.append(
        f"- evaluation (headline): {results['evaluation']}"
        + (f", {ev.get('batch_size')} prompts per seed" if results["headline_split"] == "test" else "")
    )
    lines.append(f"- seeds: {', '.join(map(str, results['seeds']))} (each seed its own rotation U and data)")
    lines.append(f"- zero predictor: log loss {results['zero_predictor_log_loss']:.2f}")
    return lines


def report(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    """report.md's sections; loss_vs_layer.png and shifts.png when ``plt`` is given."""
    headline = results["headline_split"]
    parts = [*heading(results), *describe(results)]
    parts += ["", f"## Log loss at the query vs depth ({split_title(headline)})", ""]
    parts += [
        "Mean ± std over seeds of log E[(ŷ_q − y_q)²]; a learned method at depth L is a model trained "
        "with L layers, a classical method at depth L is its iterate L.",
        "",
    ]
    parts += [markdown_table(results, headline), ""]
    if results.get("published"):
        src = results.get("published_source") or "the paper"
        parts += [f"Paper numbers: {src} (read off the figures, ±0.05).", ""]
    other = [
        s for s in ("test", "train") if s != headline and any(s in m for m in results["methods"].values())
    ]
    for split in other:
        parts += [f"## Also: {split_title(split)}", "", markdown_table(results, split), ""]
    if results.get("shifts"):
        parts += shift_section(results)
    tuned_lines = tuned_table(results)
    if tuned_lines:
        parts += ["## Tuned step sizes (chosen per depth on validation prompts, seed of first run)", ""]
        parts += [*tuned_lines, ""]
    if plt is not None:
        plot_loss_vs_layer([results], run_dir / "loss_vs_layer.png", plt)
        parts += ["![log loss vs layer](loss_vs_layer.png)", ""]
        if results.get("shifts"):
            plot_shifts(results, run_dir / "shifts.png", plt)
            parts += ["![scale-free log loss under distribution shift](shifts.png)", ""]
    return parts


def summary(results: dict[str, Any]) -> str:
    title = f"{results['name']} — log loss at the query ({results['evaluation']}), {spread(results)}:"
    text = f"{title}\n{markdown_table(results, results['headline_split'])}"
    for where, status in results.get("infeasible", {}).items():
        layers = ", ".join(f"{l} ({s})" for l, s in status.items())
        text += f"\ninfeasible constraints, {where}: layers {layers} (docs/CONSTRAINTS.md lists the remedies)"
    return text


def _shift_columns(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(column title, held-out split, adaptation split) for the task and every shift, by variance if all are
    variance shifts of the task's covariance (else the task first, then the shifts in config order)."""
    task = results.get("config", {}).get("task", {})
    base_var = float(task.get("variance", 1.0))
    cols = [(f"task (σ² = {base_var:g})", "test", "adapt:base", base_var)]
    same_family = True
    for name, info in results["shifts"].items():
        same_family &= info["covariance"] == task.get("covariance", info["covariance"]) != "mixture"
        title = f"σ² = {info['variance']:g}" if info["covariance"] != "mixture" else name
        cols.append(
            (title if title != cols[0][0] else name, f"shift:{name}", f"adapt:{name}", info["variance"])
        )
    if same_family:
        cols.sort(key=lambda c: c[3])
    return [c[:3] for c in cols]


def scale_free(results: dict[str, Any], split: str, log_loss: float) -> float:
    """A log loss minus the log loss of the zero predictor on the same distribution (0 = predicting 0)."""
    if split.startswith(("shift:", "adapt:")):
        name = split.split(":", 1)[1]
        if name in results.get("shifts", {}):
            return log_loss - results["shifts"][name]["zero_predictor_log_loss"]
    return log_loss - results["zero_predictor_log_loss"]


def shift_value(results: dict[str, Any], m: dict[str, Any], split: str, i: int) -> tuple[float, float] | None:
    """(log loss, scale-free log loss) of method entry ``m`` on ``split`` at depth index ``i``."""
    if split not in m or m[split]["log_loss_mean"][i] is None:
        return None
    v = m[split]["log_loss_mean"][i]
    return v, scale_free(results, split, v)


def shift_section(results: dict[str, Any]) -> list[str]:
    """Tables of every method on the task and each shifted distribution, at the largest depth."""
    i = len(results["depths"]) - 1
    L = results["depths"][i]
    cols = _shift_columns(results)
    zero = [
        results["shifts"][split.split(":", 1)[1]]["zero_predictor_log_loss"]
        if split.startswith("shift:")
        else results["zero_predictor_log_loss"]
        for _, split, _ in cols
    ]
    rows: list[tuple[str, Sequence[str]]] = [("zero predictor", [f"{z:.2f}" for z in zero])]
    adapt_rows: list[tuple[str, Sequence[str]]] = []
    for m in results["methods"].values():
        cells, adapt_cells = [], []
        for _, split, adapt in cols:
            got = shift_value(results, m, split, i)
            cells.append("—" if got is None else f"{fmt(got[0])} ({fmt(got[1])})")
            a = shift_value(results, m, adapt, i)
            adapt_cells.append("—" if a is None else f"{fmt(a[0])} ({fmt(a[1])})")
        rows.append((m["label"], cells))
        if any(c != "—" for c in adapt_cells):
            adapt_rows.append((m["label"], adapt_cells))
    titles = [c[0] for c in cols]
    parts = [
        f"## Out of distribution (L = {L}): log loss on held-out prompts of each distribution",
        "",
        "Each cell: log loss (scale-free: minus the log loss of the zero predictor on that distribution, so "
        "0 means no better than predicting 0 and variances can be compared). Mixtures are adapted to each "
        "distribution on a separate batch; their in-sample numbers follow below.",
        "",
        table(titles, rows),
        "",
    ]
    if adapt_rows:
        parts += [
            f"### Mixtures on their adaptation batch (in-sample, L = {L})",
            "",
            table(titles, adapt_rows),
            "",
        ]
    return parts


def plot_shifts(results: dict[str, Any], path: Path, plt: Any) -> None:
    """Scale-free log loss at the largest depth on every distribution, one line per method."""
    i = len(results["depths"]) - 1
    cols = _shift_columns(results)
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    x = list(range(len(cols)))
    for m in results["methods"].values():
        for split_idx, style, suffix in ((1, "-o", ""), (2, ":s", " (adaptation batch)")):
            points = [(j, shift_value(results, m, c[split_idx], i)) for j, c in zip(x, cols, strict=True)]
            points = [(j, v[1]) for j, v in points if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, lw=1.5, ms=4, label=f"{m['label']}{suffix}")
    ax.axhline(0.0, color="grey", ls=":", lw=1, label="zero predictor")
    ax.set_xticks(x, [c[0] for c in cols], fontsize=8)
    ax.set_ylabel("log loss − log loss of predicting 0")
    ax.set_title(f"{results['name']}: L = {results['depths'][i]}, mean over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    save(fig, path, plt)


def tuned_table(results: dict[str, Any]) -> list[str]:
    """One line per tuned classical method: its step size (and momentum) per depth, first seed."""
    lines = []
    for m in results["methods"].values():
        tuned = m.get("tuned")
        if not tuned:
            continue
        seed, per_depth = next(iter(tuned.items()))
        cells = []
        for L in results["depths"]:
            t = per_depth[str(L)]
            mom = f", β {t['momentum']:.2f}" if t.get("momentum") is not None else ""
            cells.append(f"L={L}: η {t['lr']:.3g}{mom}")
        lines.append(f"- {m['label']} (seed {seed}): " + "; ".join(cells))
    return lines
