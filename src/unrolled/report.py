"""Reports from run folders alone: Markdown tables and PNG plots (log loss vs layer, training curves).

Plots need matplotlib (``pip install 'unrolled[plot]'``, which ``make run`` installs). Without it the
Markdown report is still written and says plainly that the plots were not.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from unrolled.train.checkpoint import atomic_write_bytes, atomic_write_text, read_json

PLOT_HINT = "plots not written: matplotlib is not installed (pip install 'unrolled[plot]')"


def _pyplot() -> Any | None:
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


def _fmt(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "—"


def _split_title(results: dict[str, Any], split: str) -> str:
    if split == "train":
        return "in-sample: the training batch the models were fit on"
    return "held-out: fresh prompts from the training distribution"


def markdown_table(results: dict[str, Any], split: str) -> str:
    """Mean ± std over seeds of the log loss at each depth, with the paper's numbers beside ours."""
    depths = results["depths"]
    head = "| method | " + " | ".join(f"L={L}" for L in depths) + " |"
    rule = "|---|" + "---|" * len(depths)
    rows = [head, rule]
    published = results.get("published", {})
    for name, m in results["methods"].items():
        if split not in m:
            continue
        mean, std = m[split]["log_loss_mean"], m[split]["log_loss_std"]
        cells = " | ".join(f"{_fmt(a)} ± {_fmt(b)}" for a, b in zip(mean, std, strict=True))
        rows.append(f"| {m['label']} | {cells} |")
        if name in published:
            rows.append(f"| {m['label']} — paper | " + " | ".join(_fmt(v) for v in published[name]) + " |")
    return "\n".join(rows)


def _describe(results: dict[str, Any]) -> list[str]:
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


def write_report(run_dir: str | Path) -> Path:
    """(Re)build ``report.md`` and the PNG plots of a run folder from its files alone; returns the report."""
    run_dir = Path(run_dir)
    results = load_run(run_dir)
    headline = results["headline_split"]
    parts = [f"# {results['name']}", ""]
    if results.get("description"):
        parts += [results["description"].strip(), ""]
    parts += _describe(results)
    parts += ["", f"## Log loss at the query vs depth ({_split_title(results, headline)})", ""]
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
        parts += [f"## Also: {_split_title(results, split)}", "", markdown_table(results, split), ""]
    tuned_lines = _tuned_table(results)
    if tuned_lines:
        parts += ["## Tuned step sizes (chosen per depth on validation prompts, seed of first run)", ""]
        parts += [*tuned_lines, ""]
    plt = _pyplot()
    if plt is None:
        parts += [f"_{PLOT_HINT}_", ""]
    else:
        plot_loss_vs_layer([results], run_dir / "loss_vs_layer.png", plt)
        parts += ["![log loss vs layer](loss_vs_layer.png)", ""]
        if plot_training(run_dir, run_dir / "training.png", plt):
            parts += ["![training loss](training.png)", ""]
    timing = results.get("timing", {})
    if timing:
        parts += [f"Compute time of all units: {timing.get('compute_seconds', float('nan')):.0f} s.", ""]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(parts))
    return report


def _tuned_table(results: dict[str, Any]) -> list[str]:
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


def _save(fig: Any, path: Path, plt: Any) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_loss_vs_layer(runs: Sequence[dict[str, Any]], path: Path, plt: Any | None = None) -> None:
    """Log loss vs depth, mean ± std band per method (and run), paper numbers as dashed markers."""
    plt = plt or _pyplot()
    if plt is None:
        raise RuntimeError(PLOT_HINT)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for run in runs:
        split = run["headline_split"]
        prefix = f"{run['name']}: " if len(runs) > 1 else ""
        for name, m in run["methods"].items():
            c = colors[i % len(colors)]
            i += 1
            mean = m[split]["log_loss_mean"]
            std = m[split]["log_loss_std"]
            depths = run["depths"]
            ax.plot(depths, mean, "-o", color=c, label=f"{prefix}{m['label']}", lw=1.8, ms=4)
            lo = [a - b for a, b in zip(mean, std, strict=True)]
            hi = [a + b for a, b in zip(mean, std, strict=True)]
            ax.fill_between(depths, lo, hi, color=c, alpha=0.15, lw=0)
            pub = run.get("published", {}).get(name)
            if pub:
                ax.plot(depths, pub, "x--", color=c, alpha=0.7, lw=1, label=f"{prefix}{m['label']} (paper)")
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
    _save(fig, path, plt)


def plot_training(run_dir: Path, path: Path, plt: Any) -> bool:
    """Training loss vs step of every learned method at its largest depth, mean over seeds. False if none."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return False
    curves: dict[tuple[str, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        curves[(rec["method"], rec["depth"])][rec["step"]].append(rec["loss"])
    if not curves:
        return False
    deepest: dict[str, int] = {}
    for method, depth in curves:
        deepest[method] = max(depth, deepest.get(method, 0))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, depth in deepest.items():
        points = sorted(curves[(method, depth)].items())
        steps = [s for s, _ in points]
        mean = [math.log(max(sum(v) / len(v), 1e-300)) for _, v in points]
        ax.plot(steps, mean, label=f"{method} (L={depth})")
    ax.set_xlabel("training step")
    ax.set_ylabel("log training loss (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("training curves", fontsize=9)
    _save(fig, path, plt)
    return True


def overlay(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Several runs on one plot (``overlay.png``) with their tables (``overlay.md``) in ``out_dir``."""
    runs = [load_run(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# Overlay", ""]
    for run in runs:
        parts += [f"## {run['name']} ({run['run_dir']}; {run['evaluation']})", ""]
        parts += [markdown_table(run, run["headline_split"]), ""]
    plt = _pyplot()
    if plt is None:
        parts += [f"_{PLOT_HINT}_"]
    else:
        plot_loss_vs_layer(runs, out / "overlay.png", plt)
        parts += ["![overlay](overlay.png)"]
    md = out / "overlay.md"
    atomic_write_text(md, "\n".join(parts) + "\n")
    return md
