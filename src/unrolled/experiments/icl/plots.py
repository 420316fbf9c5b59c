"""The figures of an in-context learning report; each returns False when the results hold nothing to draw."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unrolled.report import integer_axis, nums, plain_log_axis, save

TRAIN_VALUE = {"variance": 1.0, "skew": 0.0, "label_noise": 0.0, "mixture": None, "points": None}
"""Where a shift family's size axis meets the isotropic, noiseless training task (None: it does not)."""
XLABEL = {
    "variance": "σ² (x and w*)",
    "skew": "skew exponent p",
    "label_noise": "label noise std",
    "points": "pairs per prompt",
    "mixture": "mixture mean scale",
}


def _color(results: dict[str, Any], name: str) -> str:
    """One colour per method in every figure: its place among the config's methods."""
    return f"C{list(results['methods']).index(name) % 10}"


def _style(results: dict[str, Any], name: str) -> dict[str, Any]:
    objective = results["methods"][name]["objective"]
    style = {"erm": {"ls": "-", "marker": "o"}, "constrained": {"ls": "-", "marker": "s"}}.get(
        objective, {"ls": "--", "marker": "^"}
    )
    return {**style, "color": _color(results, name)}


def error_vs_examples(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """Garg et al.'s figure: normalised error against the number of in-context examples (test)."""
    if not results["learners"]:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, entry in results["learners"].items():
        curve = nums(entry["splits"]["test"]["curve"])
        ax.plot(
            range(len(curve)), curve, ms=3, label=results["methods"][name]["label"], **_style(results, name)
        )
    base = results["baselines"].get("test", {})
    for name, style in (("least_squares", "k:"), ("bayes", "k--"), ("lasso", "k-.")):
        same_as_ls = (
            name == "bayes" and name in base and base[name]["curves"] == base["least_squares"]["curves"]
        )
        if name in base and not same_as_ls:  # noiseless: the Bayes predictor is least squares
            curve = nums(base[name]["curves"][0])
            ax.plot(range(len(curve)), curve, style, lw=1.5, label=name.replace("_", " "))
    d = results["d"]
    ax.axvline(d, color="0.6", lw=0.8)
    ax.text(d, ax.get_ylim()[1] * 0.97, " n = d", fontsize=8, color="0.4", va="top")
    ax.set_xlabel("in-context examples n")
    ax.set_ylabel("squared error / d")
    ax.set_title(f"test prompts, d = {d}", fontsize=10)
    integer_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    save(fig, path, plt)
    return True


def layers(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """Error at the last pair after every layer: the shared readout (solid) and a probe per layer (dashed)."""
    if not results["learners"]:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, entry in results["learners"].items():
        color = _color(results, name)
        curve = nums(entry["splits"]["test"]["layers_last"])
        ax.plot(range(len(curve)), curve, "-o", ms=3, color=color, label=results["methods"][name]["label"])
        reading = entry.get("reading")
        if reading is not None:
            probe = nums(reading["probe_last"])
            ax.plot(range(len(probe)), probe, "--", lw=1, color=color)
    ls = results["baselines"].get("test", {}).get("least_squares")
    floor = ls["last"][0] if ls else None
    if floor is not None and floor > 1e-4:
        ax.axhline(floor, color="k", ls=":", lw=1, label="least squares")
    elif (
        floor is not None
    ):  # noiseless prompts: least squares is exact, a line at 1e-30 would flatten the rest
        ax.plot([], [], " ", label=f"least squares: {floor:.0e} (off the axis)")
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("layer l (0: the embedding read out)")
    ax.set_ylabel("squared error / d at the last pair")
    ax.set_title("solid: shared readout; dashed: a linear probe per layer", fontsize=9)
    integer_axis(ax.xaxis)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save(fig, path, plt)
    return True


def reading(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """Heatmaps of the similarity of residuals (probe reading), layer × iteration count, per learner; the
    best-matching count of each layer boxed in red."""
    import textwrap

    rows = [(n, e["reading"]) for n, e in results["learners"].items() if e.get("reading")]
    if not rows:
        return False
    methods = ("newton", "cg", "gd")
    values = [v for _, read in rows for m in methods for row in read["probe"][m]["similarity"][1:] for v in row
              if v is not None]  # fmt: skip
    low = math.floor(10 * min(values, default=0.0)) / 10
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 2.4 * len(rows) + 0.8), squeeze=False,
                             layout="constrained")  # fmt: skip
    gd_lr = results.get("gd_lr")
    names = {"newton": "Newton", "cg": "CG", "gd": "GD" + (f" (η = {gd_lr:g})" if gd_lr else "")}
    for r, (name, read) in enumerate(rows):
        for c, m in enumerate(methods):
            ax = axes[r][c]
            block = read["probe"][m]
            sim = [nums(row) for row in block["similarity"]][1:]  # layers 1..L
            counts = block["counts"]
            im = ax.imshow(sim, aspect="auto", cmap="viridis", vmin=low, vmax=1.0, origin="lower")
            for l, k in enumerate(block["best"][1:]):
                ax.add_patch(
                    plt.Rectangle((counts.index(k) - 0.5, l - 0.5), 1, 1, fill=False, ec="red", lw=1.5)
                )
            step = max(1, math.ceil(len(counts) / 9))
            ax.set_xticks(range(0, len(counts), step), [str(k) for k in counts[::step]], fontsize=7,
                          rotation=45 if m == "gd" else 0)  # fmt: skip
            ax.set_yticks(range(len(sim)), [str(l + 1) for l in range(len(sim))], fontsize=7)
            ax.set_xlabel(f"{names[m]} iterations k", fontsize=8)
            if c == 0:
                label = textwrap.fill(results["methods"][name]["label"], 26)
                ax.set_ylabel(f"{label}\nlayer", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.5, label="cosine similarity of residuals (probe reading)")
    save(fig, path, plt)
    return True


def best_k(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """The best-matching iteration count of Newton, CG and GD against the layer (probe reading)."""
    rows = [(n, e["reading"]) for n, e in results["learners"].items() if e.get("reading")]
    if not rows:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    gd_lr = results.get("gd_lr")
    titles = {"newton": "iterative Newton", "cg": "conjugate gradient",
              "gd": "gradient descent" + (f" (η = {gd_lr:g})" if gd_lr else "")}  # fmt: skip
    for c, m in enumerate(("newton", "cg", "gd")):
        ax = axes[c]
        for name, read in rows:
            best = read["probe"][m]["best"][1:]
            ax.plot(range(1, len(best) + 1), best, marker="o", ms=4, color=_color(results, name),
                    label=results["methods"][name]["label"], ls=_style(results, name)["ls"])  # fmt: skip
        if m == "gd":
            ax.set_yscale("symlog", linthresh=1)
        else:
            integer_axis(ax.yaxis)
        ax.set_title(titles[m], fontsize=10)
        ax.set_xlabel("layer l")
        integer_axis(ax.xaxis)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best-matching iterations k (probe reading)")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    save(fig, path, plt)
    return True


def _families(results: dict[str, Any]) -> dict[str, list[tuple[float, str]]]:
    fams: dict[str, list[tuple[float, str]]] = {}
    for split, info in results["splits"].items():
        if info["family"] is not None:
            fams.setdefault(info["family"], []).append((info["size"], split))
    return {f: sorted(v) for f, v in fams.items()}


def _with_test(
    results: dict[str, Any], family: str, sizes: list[tuple[float, str]]
) -> list[tuple[float, str]]:
    """The family's sizes with the training distribution's own point (``test``) where its axis has one."""
    train = TRAIN_VALUE[family] if family != "points" else float(results["points"])
    if train is None or any(math.isclose(s, train) for s, _ in sizes):
        return sizes
    return sorted([*sizes, (train, "test")])


def shift_gaps(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """Per shift family: layerwise method − ERM (error at the last pair) against the shift's size, 95% seed
    intervals; the in-distribution point included where the axis has one."""
    gaps, fams = results.get("gaps") or {}, _families(results)
    if not gaps or not fams:
        return False
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams) + 1.5, 3.6), squeeze=False)
    for ax, (family, sizes) in zip(axes[0], fams.items(), strict=True):
        points = _with_test(results, family, sizes)
        xs = [s for s, _ in points]
        span = (xs[-1] - xs[0]) or max(abs(xs[0]), 1.0)
        for i, (name, g) in enumerate(gaps.items()):
            shift = 0.015 * span * (i - (len(gaps) - 1) / 2)  # side by side, so the intervals do not overlap
            ys = nums([g["splits"][split]["last"]["mean"] for _, split in points])
            err = nums([g["splits"][split]["last"]["ci"] or 0.0 for _, split in points])
            ax.errorbar([x + shift for x in xs], ys, yerr=err, marker="os^dv"[i % 5], ms=4, capsize=3,
                        label=results["methods"][name]["label"], color=_color(results, name))  # fmt: skip
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        spread = [abs(v) for g in gaps.values() for _, sp in points
                  for v in [g["splits"][sp]["last"]["mean"]] if v is not None]  # fmt: skip
        if spread and max(spread) > 0.5:  # gaps of very different sizes: small ones stay visible near 0
            ax.set_yscale("symlog", linthresh=0.05, linscale=0.5)
            lo, hi = ax.get_ylim()
            ax.set_yticks([v for v in (-10, -1, -0.1, 0, 0.1, 1, 10) if lo <= v <= hi])
            ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:g}"))
            ax.yaxis.set_minor_locator(plt.NullLocator())
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(XLABEL[family])
        ax.set_title(family.replace("_", " "), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("error − ERM's (squared error / d)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    save(fig, path, plt)
    return True


def shift_errors(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """Per shift family: every learner's error at the last pair against the size, beside least squares."""
    fams = _families(results)
    if not fams or not results["learners"]:
        return False
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams) + 1.5, 3.6), squeeze=False)
    for ax, (family, sizes) in zip(axes[0], fams.items(), strict=True):
        points = _with_test(results, family, sizes)
        xs = [s for s, _ in points]
        for name, entry in results["learners"].items():
            ys = nums([entry["splits"][split]["last"]["mean"] for _, split in points])
            ax.plot(xs, ys, ms=4, label=results["methods"][name]["label"], **_style(results, name))
        ls = [results["baselines"].get(split, {}).get("least_squares") for _, split in points]
        if all(ls):
            ax.plot(xs, nums([max(b["last"][0], 1e-6) for b in ls]), "k:", label="least squares")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(XLABEL[family])
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.set_title(family.replace("_", " "), fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("squared error / d at the last pair")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    save(fig, path, plt)
    return True


def learning_curve(results: dict[str, Any], path: Path, plt: Any) -> bool:
    """Held-out error at the last pair against the training step (mean over seeds, ± one std band)."""
    rows = [(n, e["learning_curve"]) for n, e in results["learners"].items() if e.get("learning_curve")]
    rows = [(n, c) for n, c in rows if c["steps"]]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bottom = min(m for _, c in rows for m in nums(c["last"]) if m is not None and m > 0) / 3
    for name, c in rows:
        mean, sd = nums(c["last"]), nums(c["last_sd"])
        ax.plot(c["steps"], mean, color=_color(results, name), label=results["methods"][name]["label"],
                ls=_style(results, name)["ls"])  # fmt: skip
        lo = [max(m - s, bottom) for m, s in zip(mean, sd, strict=True)]  # a band to 0 would take the axis
        ax.fill_between(c["steps"], lo, [m + s for m, s in zip(mean, sd, strict=True)], color=_color(results, name),
                        alpha=0.15, lw=0)  # fmt: skip
    ls = results["baselines"].get("test", {}).get("least_squares")
    floor = ls["last"][0] if ls and ls["last"][0] is not None else 0.0
    ax.axhline(floor + 0.05, color="k", ls=":", lw=1, label="least squares + 0.05 (the bar)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=bottom)
    plain_log_axis(ax.yaxis)
    integer_axis(ax.xaxis)
    ax.set_xlabel("training step (band: ± one std over seeds)")
    ax.set_ylabel(f"held-out squared error / d at n = {results['points'] - 1}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save(fig, path, plt)
    return True


FIGURES: dict[str, Callable[[dict[str, Any], Path, Any], bool]] = {
    "icl_learning_curve": learning_curve,
    "icl_error_vs_examples": error_vs_examples,
    "icl_layers": layers,
    "icl_reading": reading,
    "icl_best_k": best_k,
    "icl_shift_errors": shift_errors,
    "icl_shift_gaps": shift_gaps,
}
