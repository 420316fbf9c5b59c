"""What every family's report is made of: run folders read back, tables, and the plots they share.

Reports are rebuilt from run folders alone. This module holds the shared pieces: :func:`load_run`, Markdown
tables of means over seeds beside the paper's numbers, loss vs layer, and the writing of ``report.md``
(training curves and multipliers from ``metrics.jsonl``: :mod:`unrolled.training_plots`). A family's own tables and plots live with the family;
:mod:`unrolled.experiments.reporting` puts them together.

Plots need matplotlib (``pip install 'unrolled[plot]'``, which ``make run`` installs). Without it the
Markdown report is still written and says plainly that the plots were not.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from unrolled.train.checkpoint import atomic_write_bytes, atomic_write_text, read_json

PLOT_HINT = "plots not written: matplotlib is not installed (pip install 'unrolled[plot]')"


def pyplot() -> Any | None:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a run folder, with ``config`` (the resolved YAML) and ``run_dir`` added."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no such directory)")
    results = read_json(run_dir / "results.json")
    cfg_path = run_dir / "config.yaml"
    results["config"] = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    results["run_dir"] = str(run_dir)
    return results


def fmt(x: float | None, digits: int = 2) -> str:
    """A number for a table; None or non-finite (diverged) as a dash."""
    return f"{x:.{digits}f}" if x is not None and math.isfinite(x) else "—"


def nums(values: Sequence[float | None]) -> list[float]:
    """None (a diverged mean) as NaN, for plotting."""
    return [math.nan if v is None else v for v in values]


def mean_std(mean: float | None, std: float | None, seeds: int, digits: int = 2) -> str:
    """``0.19 ± 0.04`` over several seeds; just ``0.19`` with one (there is no spread to show)."""
    if seeds <= 1:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def spread(results: dict[str, Any]) -> str:
    """How a table's cells are summarised over the run's seeds."""
    return "mean ± std over seeds" if len(results["seeds"]) > 1 else "one seed"


def table(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A Markdown table: a ``method`` column, then ``columns``; ``rows`` are (label, cells)."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def paper_row(
    label: str, values: Sequence[float | None] | None, digits: int = 2
) -> list[tuple[str, list[str]]]:
    """The row of the paper's numbers under a method's row ([] if the paper has none); blanks where it has
    no number at a column."""
    if not values or all(v is None for v in values):
        return []
    return [(f"{label} — paper", ["" if v is None else f"{v:.{digits}f}" for v in values])]


def gamma_table(
    results: dict[str, Any], mean: str, std: str, digits: int = 2, gammas: Sequence[float] | None = None
) -> str:
    """A metric of every method at every test γ (``results["gammas"]``), mean ± std over seeds, with the paper's
    numbers (``published`` lists over ``published_gammas``) beside ours."""
    all_gammas = results["gammas"]
    cols = [all_gammas.index(g) for g in gammas] if gammas is not None else list(range(len(all_gammas)))
    seeds = len(results["seeds"])
    published = dict(results.get("published", {}))
    pub_g = results.get("published_gammas", [])
    rows: list[tuple[str, Sequence[str]]] = []
    for name, m in results["methods"].items():
        cells = [mean_std(m[mean][i], m[std][i], seeds, digits=digits) for i in cols]
        lookup = dict(zip(pub_g, published.get(name) or [None] * len(pub_g), strict=True))
        paper = [lookup.get(all_gammas[i]) for i in cols]
        rows += [(m["label"], cells), *paper_row(m["label"], paper, digits=digits)]
    for ref in results.get("references", {}).values():  # classical references (no training): no paper row
        rows.append((ref["label"], [mean_std(ref[mean][i], ref[std][i], seeds, digits=digits) for i in cols]))
    return table([f"γ={all_gammas[i]:g}" for i in cols], rows)


def violation_table(results: dict[str, Any]) -> str:
    """Share of non-descending layers at the clean, the training and the largest test γ (those of them at which
    every method's layers were read out)."""
    gammas = results["gammas"]
    measured = [g for g in gammas if all(str(g) in m["violation_share"] for m in results["methods"].values())]
    picks = sorted({gammas[0], results["train_gamma"], gammas[-1]} & set(measured)) or measured[:1]
    rows = [
        (m["label"], [f"{m['violation_share'][str(g)]:.2f}" for g in picks])
        for m in results["methods"].values()
    ]
    return table([f"γ={g:g}" for g in picks], rows)


def plot_vs_gamma(
    runs: Sequence[dict[str, Any]], path: Path, plt: Any, mean: str, std: str, ylabel: str, title: str
) -> bool:
    """A metric vs test γ, mean ± std band per method (solid: constrained); the paper's points as crosses;
    classical references (``run["references"]``) dotted black."""
    entries = sum(
        len(r["methods"]) + len(r.get("published", {})) + len(r.get("references", {})) for r in runs
    )
    outside = entries > 8  # a long legend goes beside the axes, not over the curves
    fig, ax = plt.subplots(figsize=(9.6 if outside else 6.4, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for run in runs:
        prefix = f"{run['name']}: " if len(runs) > 1 else ""
        for name, m in run["methods"].items():
            c = colors[i % len(colors)]
            i += 1
            g = run["gammas"]
            style = "-o" if m.get("constrained") else "--s"
            ax.plot(g, m[mean], style, color=c, ms=3.5, lw=1.6, label=f"{prefix}{m['label']}")
            lo = [a - b for a, b in zip(m[mean], m[std], strict=True)]
            hi = [a + b for a, b in zip(m[mean], m[std], strict=True)]
            ax.fill_between(g, lo, hi, color=c, alpha=0.15, lw=0)
            pub = run.get("published", {}).get(name)
            if pub:
                points = [(x, y) for x, y in zip(run["published_gammas"], pub, strict=True) if y is not None]
                ax.plot(
                    *zip(*points, strict=True),
                    "x",
                    color=c,
                    ms=8,
                    mew=2,
                    label=f"{prefix}{m['label']} (paper)",
                )
        for style, ref in zip((":", "-.", "--"), run.get("references", {}).values(), strict=False):
            ax.plot(run["gammas"], ref[mean], style, color="black", lw=1.6, label=f"{prefix}{ref['label']}")
    ax.set_xlabel("test perturbation γ")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=7)
    save(fig, path, plt)
    return True


def plot_layerwise(
    results: dict[str, Any], path: Path, plt: Any, key: str, ylabel: str, log: bool = False
) -> None:
    """A layerwise curve of every method (``m[key][str(γ)]``), at the training γ and at the largest test γ (of
    those at which every method's layers were read out; nothing if there are none)."""
    measured = [g for g in results["gammas"] if all(str(g) in m[key] for m in results["methods"].values())]
    if not measured:
        return
    panels = [g for g in (results["train_gamma"], measured[-1]) if g in measured] or measured[:1]
    panels = list(dict.fromkeys(panels))
    outside = len(results["methods"]) > 4  # a long legend goes beside the panels, not over the curves
    width = 5.2 * len(panels) + (4.5 if outside else 0.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.0), squeeze=False)
    for ax, g in zip(axes[0], panels, strict=True):
        for m in results["methods"].values():
            curve = m[key][str(g)]
            ax.plot(range(len(curve)), curve, "-o" if m.get("constrained") else "--s", ms=3, label=m["label"])
        if log:
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        integer_axis(ax.xaxis)
        ax.set_xlabel("layer l (0: the embedding read out)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"γ = {g:g}", fontsize=9)
        ax.grid(alpha=0.3)
    if outside:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        axes[0][0].legend(fontsize=7)
    save(fig, path, plt)


def final_multipliers(results: dict[str, Any]) -> list[str]:
    """A report section: every constrained method's final multipliers λ_1..λ_L (first seed); [] if none."""
    mult = [
        (m["label"], m["multipliers_per_seed"])
        for m in results["methods"].values()
        if "multipliers_per_seed" in m
    ]
    if not mult:
        return []
    lines = ["## Final multipliers λ_1..λ_L (first seed)", ""]
    lines += [f"- {label}: " + ", ".join(f"{v:.3g}" for v in per_seed[0]) for label, per_seed in mult]
    return [*lines, ""]


def integer_axis(axis: Any) -> None:
    """Ticks at whole numbers only, for an axis that counts layers, iterations or steps (``ax.xaxis``)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def plain_log_axis(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (``2.9``, ``0.05``), not ``2.9×10⁰``; call after plotting.
    Over less than a decade and a half the minor ticks are labelled too (else the axis would show none)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    axis.set_major_formatter(plain)
    lo, hi = sorted(axis.get_view_interval())
    axis.set_minor_formatter(plain if lo > 0 and hi / lo < 30 else NullFormatter())


def save(fig: Any, path: Path, plt: Any) -> None:
    """Write a figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def heading(results: dict[str, Any]) -> list[str]:
    """The report's title and the experiment's description."""
    parts = [f"# {results['name']}", ""]
    if results.get("description"):
        parts += [results["description"].strip(), ""]
    return parts


def write_markdown(run_dir: Path, results: dict[str, Any], parts: list[str]) -> Path:
    """Append the compute time and write ``report.md`` atomically; returns its path."""
    timing = results.get("timing", {})
    if timing:
        parts = [
            *parts,
            f"Compute time of all units: {timing.get('compute_seconds', float('nan')):.0f} s.",
            "",
        ]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(parts))
    return report


def plot_loss_vs_layer(runs: Sequence[dict[str, Any]], path: Path, plt: Any | None = None) -> bool:
    """Log loss vs depth, mean ± std band per method (and run), paper numbers as dashed markers.

    Each run is a ``results.json`` with ``depths``, ``headline_split``, ``zero_predictor_log_loss`` and, per
    method, ``log_loss_mean`` / ``log_loss_std`` of its headline split.
    """
    plt = plt or pyplot()
    if plt is None:
        raise RuntimeError(PLOT_HINT)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for run in runs:
        split = run["headline_split"]
        prefix = f"{run['name']}: " if len(runs) > 1 else ""
        for name, m in run["methods"].items():
            if split not in m:
                continue
            c = colors[i % len(colors)]
            i += 1
            mean = nums(m[split]["log_loss_mean"])
            std = [0.0 if math.isnan(v) else v for v in nums(m[split]["log_loss_std"])]
            depths = run["depths"]
            ax.plot(depths, mean, "-o", color=c, label=f"{prefix}{m['label']}", lw=1.8, ms=4)
            lo = [a - b for a, b in zip(mean, std, strict=True)]
            hi = [a + b for a, b in zip(mean, std, strict=True)]
            ax.fill_between(depths, lo, hi, color=c, alpha=0.15, lw=0)
            pub = run.get("published", {}).get(name)
            if pub:
                ax.plot(
                    depths, nums(pub), "x--", color=c, alpha=0.7, lw=1, label=f"{prefix}{m['label']} (paper)"
                )
    zero = runs[0]["zero_predictor_log_loss"]
    ax.axhline(zero, color="grey", ls=":", lw=1, label="zero predictor")
    ax.set_xlabel("layers / iterations L")
    ax.set_ylabel("log test loss at the query")
    ax.set_xticks(sorted({L for r in runs for L in r["depths"]}))
    where = "in-sample" if all(r["headline_split"] == "train" for r in runs) else "held-out prompts"
    title = runs[0]["name"] if len(runs) == 1 else "overlay"
    ax.set_title(f"{title} ({where}; mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    save(fig, path, plt)
    return True
