"""The video-denoising family's report: RMSE vs γ, layerwise MSE, non-descending layers, multipliers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unrolled.report import heading, mean_std, paper_row, save, spread, table


def denoising_table(results: dict[str, Any], gammas: Sequence[float] | None = None) -> str:
    """RMSE (0–255) of every method at every test γ, mean ± std over seeds, with the paper's numbers."""
    all_gammas = results["gammas"]
    cols = [all_gammas.index(g) for g in gammas] if gammas is not None else list(range(len(all_gammas)))
    seeds = len(results["seeds"])
    published = dict(results.get("published", {}))
    pub_g = results.get("published_gammas", [])
    rows: list[tuple[str, Sequence[str]]] = []
    for name, m in results["methods"].items():
        cells = [mean_std(m["rmse_mean"][i], m["rmse_std"][i], seeds, digits=1) for i in cols]
        lookup = dict(zip(pub_g, published.get(name) or [None] * len(pub_g), strict=True))
        paper = [lookup.get(all_gammas[i]) for i in cols]
        rows += [(m["label"], cells), *paper_row(m["label"], paper, digits=1)]
    return table([f"γ={all_gammas[i]:g}" for i in cols], rows)


def violation_table(results: dict[str, Any]) -> str:
    """Share of non-descending layers at the clean, the training and the largest test γ."""
    gammas = results["gammas"]
    picks = sorted({gammas[0], results["train_gamma"], gammas[-1]} & set(gammas))
    rows = [
        (m["label"], [f"{m['violation_share'][str(g)]:.2f}" for g in picks])
        for m in results["methods"].values()
    ]
    return table([f"γ={g:g}" for g in picks], rows)


def report(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    """report.md's sections; rmse_vs_gamma.png and loss_vs_layer.png when ``plt`` is given."""
    cfg = results.get("config", {})
    task, train = cfg.get("task", {}), cfg.get("train", {})
    parts = heading(results)
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
    mult = [
        (m["label"], m["multipliers_per_seed"])
        for m in results["methods"].values()
        if "multipliers_per_seed" in m
    ]
    if mult:
        parts += ["## Final multipliers λ_1..λ_L (first seed)", ""]
        parts += [f"- {label}: " + ", ".join(f"{v:.3g}" for v in per_seed[0]) for label, per_seed in mult]
        parts += [""]
    if plt is not None:
        plot_rmse_vs_gamma([results], run_dir / "rmse_vs_gamma.png", plt)
        plot_layers(results, run_dir / "loss_vs_layer.png", plt)
        parts += ["![RMSE vs γ](rmse_vs_gamma.png)", "", "![loss vs layer](loss_vs_layer.png)", ""]
    return parts


def summary(results: dict[str, Any]) -> str:
    title = f"{results['name']} — test RMSE (0–255) vs test perturbation γ, {spread(results)}:"
    return f"{title}\n{denoising_table(results)}"


def plot_rmse_vs_gamma(runs: Sequence[dict[str, Any]], path: Path, plt: Any) -> bool:
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
                points = [(x, y) for x, y in zip(run["published_gammas"], pub, strict=True) if y is not None]
                ax.plot(
                    *zip(*points, strict=True),
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
    save(fig, path, plt)
    return True


def plot_layers(results: dict[str, Any], path: Path, plt: Any) -> None:
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
    save(fig, path, plt)
