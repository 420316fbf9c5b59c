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


def _fmt(x: float | None) -> str:
    return f"{x:.2f}" if x is not None and math.isfinite(x) else "—"


def _nums(values: Sequence[float | None]) -> list[float]:
    """None (a diverged mean) as NaN, for plotting."""
    return [math.nan if v is None else v for v in values]


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
        div = m[split].get("diverged_seeds") or [0] * len(mean)
        cells = " | ".join(
            f"{_fmt(a)} ± {_fmt(b)}" + (f" ({k} diverged)" if k else "")
            for a, b, k in zip(mean, std, div, strict=True)
        )
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
    if results.get("task") == "video denoising":
        return write_denoising_report(run_dir, results)
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
    if results.get("shifts"):
        parts += shift_section(results)
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
        if results.get("shifts"):
            plot_shifts(results, run_dir / "shifts.png", plt)
            parts += ["![scale-free log loss under distribution shift](shifts.png)", ""]
        if plot_training(run_dir, run_dir / "training.png", plt):
            parts += ["![training loss](training.png)", ""]
    return _finish_report(run_dir, results, parts)


def _finish_report(run_dir: Path, results: dict[str, Any], parts: list[str]) -> Path:
    """Append the compute time and write ``report.md`` atomically; returns its path."""
    timing = results.get("timing", {})
    if timing:
        parts += [f"Compute time of all units: {timing.get('compute_seconds', float('nan')):.0f} s.", ""]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(parts))
    return report


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
    head = "| method | " + " | ".join(c[0] for c in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    zero = [
        results["shifts"][split.split(":", 1)[1]]["zero_predictor_log_loss"]
        if split.startswith("shift:")
        else results["zero_predictor_log_loss"]
        for _, split, _ in cols
    ]
    parts = [
        f"## Out of distribution (L = {L}): log loss on held-out prompts of each distribution",
        "",
        "Each cell: log loss (scale-free: minus the log loss of the zero predictor on that distribution, so "
        "0 means no better than predicting 0 and variances can be compared). Mixtures are adapted to each "
        "distribution on a separate batch; their in-sample numbers follow below.",
        "",
        head,
        rule,
        "| zero predictor | " + " | ".join(f"{z:.2f}" for z in zero) + " |",
    ]
    adapt_rows = []
    for m in results["methods"].values():
        cells, adapt_cells = [], []
        for _, split, adapt in cols:
            got = shift_value(results, m, split, i)
            cells.append("—" if got is None else f"{_fmt(got[0])} ({_fmt(got[1])})")
            a = shift_value(results, m, adapt, i)
            adapt_cells.append("—" if a is None else f"{_fmt(a[0])} ({_fmt(a[1])})")
        parts.append(f"| {m['label']} | " + " | ".join(cells) + " |")
        if any(c != "—" for c in adapt_cells):
            adapt_rows.append(f"| {m['label']} | " + " | ".join(adapt_cells) + " |")
    parts.append("")
    if adapt_rows:
        parts += [
            f"### Mixtures on their adaptation batch (in-sample, L = {L})",
            "",
            head,
            rule,
            *adapt_rows,
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
    _save(fig, path, plt)


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
            if split not in m:
                continue
            c = colors[i % len(colors)]
            i += 1
            mean = _nums(m[split]["log_loss_mean"])
            std = [0.0 if math.isnan(v) else v for v in _nums(m[split]["log_loss_std"])]
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
    video = [r.get("task") == "video denoising" for r in runs]
    if any(video) and not all(video):
        raise ValueError("cannot overlay regression and video-denoising runs in one plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# Overlay", ""]
    for run in runs:
        if all(video):
            parts += [f"## {run['name']} ({run['run_dir']})", "", denoising_table(run), ""]
        else:
            parts += [f"## {run['name']} ({run['run_dir']}; {run['evaluation']})", ""]
            parts += [markdown_table(run, run["headline_split"]), ""]
    plt = _pyplot()
    if plt is None:
        parts += [f"_{PLOT_HINT}_"]
    else:
        (plot_rmse_vs_gamma if all(video) else plot_loss_vs_layer)(runs, out / "overlay.png", plt)
        parts += ["![overlay](overlay.png)"]
    md = out / "overlay.md"
    atomic_write_text(md, "\n".join(parts) + "\n")
    return md


# ----------------------------------------------------------------------------------------------------------
# video denoising


def denoising_table(results: dict[str, Any], gammas: Sequence[float] | None = None) -> str:
    """RMSE (0–255) of every method at every test γ, mean ± std over seeds, with the paper's numbers."""
    all_gammas = results["gammas"]
    cols = [all_gammas.index(g) for g in gammas] if gammas is not None else list(range(len(all_gammas)))
    head = "| method | " + " | ".join(f"γ={all_gammas[i]:g}" for i in cols) + " |"
    rows = [head, "|---|" + "---|" * len(cols)]
    pub_g = results.get("published_gammas", [])
    for name, m in results["methods"].items():
        cells = " | ".join(f"{m['rmse_mean'][i]:.1f} ± {m['rmse_std'][i]:.1f}" for i in cols)
        rows.append(f"| {m['label']} | {cells} |")
        pub = results.get("published", {}).get(name)
        if pub:
            lookup = dict(zip(pub_g, pub, strict=True))
            rows.append(
                f"| {m['label']} — paper | "
                + " | ".join(f"{lookup[all_gammas[i]]:.1f}" if all_gammas[i] in lookup else "" for i in cols)
                + " |"
            )
    return "\n".join(rows)


def _violation_table(results: dict[str, Any]) -> str:
    gammas = results["gammas"]
    picks = sorted({gammas[0], results["train_gamma"], gammas[-1]} & set(gammas))
    rows = ["| method | " + " | ".join(f"γ={g:g}" for g in picks) + " |", "|---|" + "---|" * len(picks)]
    for m in results["methods"].values():
        rows.append(
            f"| {m['label']} | " + " | ".join(f"{m['violation_share'][str(g)]:.2f}" for g in picks) + " |"
        )
    return "\n".join(rows)


def write_denoising_report(run_dir: Path, results: dict[str, Any]) -> Path:
    """report.md and rmse_vs_gamma.png, loss_vs_layer.png, multipliers.png of a denoising run."""
    cfg = results.get("config", {})
    task, train = cfg.get("task", {}), cfg.get("train", {})
    parts = [f"# {results['name']}", ""]
    if results.get("description"):
        parts += [results["description"].strip(), ""]
    parts += [
        f"- data: train videos {', '.join(task.get('train_sources', []))}; held-out test videos "
        f"{', '.join(task.get('test_sources', []))} (split by source video); clips of {task.get('frames')} frames, "
        f"{task.get('crop')}×{task.get('crop')} px, {'grayscale' if task.get('grayscale') else 'colour'}",
        f"- noise: x̃ = x + ε, ε ~ N(μ, (γσ)²), σ the training pixel std; trained at γ = {results['train_gamma']:g}",
        f"- training: {train.get('steps')} {train.get('optimizer')} steps, lr {train.get('lr')}, "
        f"batch {train.get('batch_size')} clips; seeds {', '.join(map(str, results['seeds']))}",
        f"- unreadable video files skipped (task.skip_bad): {len(results.get('skipped_files', []))}"
        + "".join(f"\n  - {path}: {reason}" for path, reason in results.get("skipped_files", [])),
        "",
        "## Test RMSE (0–255) vs test perturbation γ (mean ± std over seeds; held-out videos)",
        "",
        denoising_table(results),
        "",
    ]
    if results.get("published"):
        parts += [f"Paper numbers: {results.get('published_source') or 'the paper'}.", ""]
    parts += [
        "## Share of layers whose loss does not descend (f_l > f_{l−1}), mean over seeds",
        "",
        _violation_table(results),
        "",
    ]
    mult = [
        (m["label"], m["multipliers_per_seed"])
        for m in results["methods"].values()
        if "multipliers_per_seed" in m
    ]
    if mult:
        parts += ["## Final multipliers λ_1..λ_L (first seed)", ""]
        parts += [f"- {label}: " + ", ".join(f"{v:.3g}" for v in per_seed[0]) for label, per_seed in mult]
        parts += [""]
    plt = _pyplot()
    if plt is None:
        parts += [f"_{PLOT_HINT}_", ""]
    else:
        plot_rmse_vs_gamma([results], run_dir / "rmse_vs_gamma.png", plt)
        plot_denoising_layers(results, run_dir / "loss_vs_layer.png", plt)
        parts += ["![RMSE vs γ](rmse_vs_gamma.png)", "", "![loss vs layer](loss_vs_layer.png)", ""]
        if plot_multipliers(run_dir, run_dir / "multipliers.png", plt):
            parts += ["![multipliers over training](multipliers.png)", ""]
    return _finish_report(run_dir, results, parts)


def plot_rmse_vs_gamma(runs: Sequence[dict[str, Any]], path: Path, plt: Any) -> None:
    """Test RMSE vs γ, mean ± std band per method; the paper's points as crosses."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for run in runs:
        prefix = f"{run['name']}: " if len(runs) > 1 else ""
        for name, m in run["methods"].items():
            c = colors[i % len(colors)]
            i += 1
            g = run["gammas"]
            style = "-o" if m.get("constrained") else "--s"
            ax.plot(g, m["rmse_mean"], style, color=c, ms=3.5, lw=1.6, label=f"{prefix}{m['label']}")
            lo = [a - b for a, b in zip(m["rmse_mean"], m["rmse_std"], strict=True)]
            hi = [a + b for a, b in zip(m["rmse_mean"], m["rmse_std"], strict=True)]
            ax.fill_between(g, lo, hi, color=c, alpha=0.15, lw=0)
            pub = run.get("published", {}).get(name)
            if pub:
                ax.plot(
                    run["published_gammas"],
                    pub,
                    "x",
                    color=c,
                    ms=8,
                    mew=2,
                    label=f"{prefix}{m['label']} (paper)",
                )
    ax.set_xlabel("test perturbation γ")
    ax.set_ylabel("test RMSE (0–255)")
    ax.set_title("robustness to input noise (held-out videos; solid: constrained)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path, plt)


def plot_denoising_layers(results: dict[str, Any], path: Path, plt: Any) -> None:
    """Layerwise test MSE of every method, at the training noise level and at the largest test level."""
    gammas = results["gammas"]
    panels = [g for g in (results["train_gamma"], gammas[-1]) if g in gammas] or [gammas[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, g in zip(axes[0], panels, strict=True):
        for m in results["methods"].values():
            curve = m["layer_mse_mean"][str(g)]
            ax.plot(range(len(curve)), curve, "-o" if m.get("constrained") else "--s", ms=3, label=m["label"])
        ax.set_yscale("log")
        ax.set_xlabel("layer l (0: the embedding read out)")
        ax.set_ylabel("test MSE of the readout")
        ax.set_title(f"γ = {g:g}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    _save(fig, path, plt)


def plot_multipliers(run_dir: Path, path: Path, plt: Any) -> bool:
    """λ_l over training (first seed) for every constrained method; False if there are none."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return False
    series: dict[str, list[tuple[int, list[float]]]] = defaultdict(list)
    first_seed: dict[str, int] = {}
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "multipliers" not in rec:
            continue
        key = f"{rec['method']}" + (f" L={rec['depth']}" if rec.get("depth") is not None else "")
        first_seed.setdefault(key, rec["seed"])
        if rec["seed"] == first_seed[key]:
            series[key].append((rec["step"], rec["multipliers"]))
    if not series:
        return False
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.4), squeeze=False)
    for ax, (key, points) in zip(axes[0], sorted(series.items()), strict=True):
        points.sort()
        steps = [s for s, _ in points]
        for layer in range(len(points[0][1])):
            ax.plot(steps, [p[layer] for _, p in points], lw=1.2, label=f"λ_{layer + 1}")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("multiplier")
    axes[0][0].legend(fontsize=6, ncol=2)
    _save(fig, path, plt)
    return True
