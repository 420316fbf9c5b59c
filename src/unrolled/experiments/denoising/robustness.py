"""The robustness study's view: RMSE(constrained) − RMSE(ERM baseline), paired by seed, per setting.

Every constrained method that names a ``baseline`` contributes one row: its gap at its own training γ (in
distribution) and at the largest test γ (γ = 1.5 on the paper's grid). Negative: constrained training helped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unrolled.report import save, table


def _cell(gap: dict[str, Any] | None) -> str:
    if gap is None:
        return "—"
    n = len(gap["per_seed"])
    spread = f" ± {gap['std']:.1f}" if n > 1 else ""
    return f"{gap['mean']:+.1f}{spread}"


def gap_table(results: dict[str, Any]) -> str:
    """One row per constrained setting: its baseline, training γ, and the two paired gaps."""
    gaps = results.get("gaps") or {}
    top = results["gammas"][-1]
    rows = []
    for name, gap in gaps.items():
        m = results["methods"][name]
        base = results["methods"][gap["baseline"]]
        rows.append(
            (
                m["label"],
                [base["label"], f"{gap['train_gamma']:g}", _cell(gap["at_train"]), _cell(gap["at_max"])],
            )
        )
    return table(["ERM baseline", "train γ", "gap at train γ", f"gap at γ = {top:g}"], rows)


def robustness_section(results: dict[str, Any], run_dir: Path, plt: Any | None) -> list[str]:
    """report.md's constrained − ERM section (and robustness_gap.png) when the config pairs methods."""
    if not results.get("gaps"):
        return []
    parts = [
        "## Constrained − ERM test RMSE, paired by seed (negative: constrained is better)",
        "",
        gap_table(results),
        "",
    ]
    if plt is not None and plot_gaps(results, run_dir / "robustness_gap.png", plt):
        parts += ["![constrained minus ERM](robustness_gap.png)", ""]
    return parts


def plot_gaps(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """Horizontal bars: the mean gap at the training γ and at the largest γ per setting, seeds as dots."""
    gaps = results.get("gaps") or {}
    if not gaps:
        return False
    names = list(gaps)
    top = results["gammas"][-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(names) + 1.6))
    height = 0.38
    for k, (key, label, color) in enumerate(
        (("at_train", "at the training γ", "tab:blue"), ("at_max", f"at γ = {top:g}", "tab:red"))
    ):
        for i, name in enumerate(names):
            gap = gaps[name][key]
            if gap is None:
                continue
            y = i + (k - 0.5) * height
            ax.barh(y, gap["mean"], height, xerr=gap["std"], color=color, alpha=0.55,
                    label=label if i == 0 else None, error_kw={"lw": 1})  # fmt: skip
            ax.plot(gap["per_seed"], [y] * len(gap["per_seed"]), "o", color=color, ms=3)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(names)), [results["methods"][n]["label"] for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("RMSE(constrained) − RMSE(ERM), 0–255 scale (< 0: constrained better)")
    ax.set_title(f"{results['name']}: paired by seed, mean ± std (dots: seeds)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path, plt)
    return True
