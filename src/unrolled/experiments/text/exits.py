"""Early exit for the text classifiers of a finished run (issue 31): accuracy against layers run.

For every model a text run saved (``models/<method>/seed<s>/``) and every seed: the classifier truncated after
layer l, and PABEE's patience, DeeBERT's entropy and the softmax confidence rules, each swept over its
threshold, calibrated on the run's validation texts for the fewest mean layers within ``budget`` of the full
model's accuracy (1 point by default), then scored on the test texts, with the wall time of the run that skips
layers against the full forward on the same texts. Clean inputs (γ = 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unrolled.exits import (
    ACCURACY,
    Budget,
    Confidence,
    Entropy,
    ExitRule,
    Patience,
    calibrate,
    fixed_depth_curve,
    layer_predictions,
    simulate_exits,
    sweep,
    timed,
)
from unrolled.experiments.icl.aggregate import fmt_interval, seed_interval
from unrolled.experiments.text.config import TextExperiment
from unrolled.experiments.text.data import TextSeedData
from unrolled.experiments.text.unit import build, tokenizer_model
from unrolled.report import integer_axis, nums, save
from unrolled.tasks.text.tokenize import batches

ENTROPY = [0.01 * 2**k for k in range(12)]  # nats; those under log C apply to C classes
CONFIDENCE = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999]  # those over 1 / C apply


def _rules(depth: int, classes: int) -> dict[str, tuple[ExitRule, list[float]]]:
    """Each rule and its threshold grid for a ``depth``-layer classifier of ``classes`` labels."""
    return {
        "patience": (Patience(), [float(p) for p in range(1, depth)]),
        "entropy": (Entropy(), [t for t in ENTROPY if t < math.log(classes)]),
        "confidence": (Confidence(), [t for t in CONFIDENCE if t > 1 / classes]),
    }


def load_solver(folder: Path, method: Any, num_labels: int, seed: int) -> torch.nn.Module:
    """A model a text run saved: a ``save_pretrained`` classifier, or a state dict of the solver."""
    if (folder / "solver.pt").is_file():
        solver = build(method, num_labels, seed)
        solver.load_state_dict(torch.load(folder / "solver.pt", map_location="cpu", weights_only=True))
    else:
        from unrolled.models.hf import EncoderSolver, load_model

        solver = EncoderSolver(load_model(str(folder), "classifier"), readout="model")
    return solver.eval()


def _layer_logits(solver: torch.nn.Module, encoded: dict[str, Tensor], limit: int, batch_size: int) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Every layer's logits ``[L + 1, N, C]`` and the labels ``[N]`` of at most ``limit`` texts."""
    encoded = {k: v[:limit] for k, v in encoded.items()}
    logits, labels = [], []
    for batch in batches(encoded, batch_size):
        labels.append(batch.pop("labels"))
        logits.append(layer_predictions(solver, batch))
    return torch.cat(logits, dim=1), torch.cat(labels)


def analyse(run_dir: Path, cfg: TextExperiment, *, samples: int = 10_000, budget: float = 0.01,
            progress: Any = None) -> dict[str, Any]:  # fmt: skip
    """Exit curves and calibrated exits of every classifier saved in ``run_dir`` (module docstring)."""
    per_method: dict[str, list[dict[str, Any]]] = {}
    for seed in cfg.seeds:
        data: TextSeedData | None = None
        for method in cfg.methods:
            folder = run_dir / "models" / method.name / f"seed{seed}"
            if not folder.is_dir():
                continue
            data = data or TextSeedData(cfg.task, seed)
            solver = load_solver(folder, method, data.num_labels, seed)
            tok = tokenizer_model(method)
            size = cfg.train.eval_batch_size
            val, val_y = _layer_logits(solver, data.encoded(tok, "validation"), samples, size)
            test, test_y = _layer_logits(solver, data.encoded(tok, "test"), samples, size)
            depth = val.shape[0] - 1
            row: dict[str, Any] = {"seed": seed, "depth": depth, "full": ACCURACY(test[-1], test_y),
                                   "fixed": [p.quality for p in fixed_depth_curve(test, test_y, ACCURACY)],
                                   "rules": {}}  # fmt: skip
            timing_batch = {k: v[:size] for k, v in data.encoded(tok, "test").items() if k != "labels"}
            for name, (rule, grid) in _rules(depth, data.num_labels).items():
                chosen = calibrate(val, val_y, rule, grid, ACCURACY, Budget(budget, relative=False))
                entry: dict[str, Any] = {
                    "curve": [(p.mean_layers, p.quality) for p in sweep(test, test_y, rule, grid, ACCURACY)],
                    "threshold": None if chosen.rule is None else chosen.rule.threshold,
                }
                if chosen.rule is not None:
                    result = simulate_exits(test, chosen.rule)
                    entry.update({"accuracy": ACCURACY(result.prediction, test_y), "mean_layers": result.mean_layers,
                                  "timing": timed(solver, timing_batch, chosen.rule)})  # fmt: skip
                row["rules"][name] = entry
            per_method.setdefault(method.name, []).append(row)
            if progress is not None:
                progress(f"{method.name} seed {seed}")
    return _aggregate(cfg, per_method, budget)


def _aggregate(
    cfg: TextExperiment, per_method: dict[str, list[dict[str, Any]]], budget: float
) -> dict[str, Any]:
    labels = {m.name: m.label or m.name for m in cfg.methods}
    methods: dict[str, Any] = {}
    for name, rows in per_method.items():
        depth = rows[0]["depth"]
        entry: dict[str, Any] = {
            "label": labels[name],
            "index": list(labels).index(name),
            "depth": depth,
            "seeds": [r["seed"] for r in rows],
            "full": seed_interval([r["full"] for r in rows]),
            "fixed": [sum(r["fixed"][l] for r in rows) / len(rows) for l in range(depth)],
            "rules": {},
            "per_seed": rows,
        }
        for rule in rows[0]["rules"]:
            cal = [r["rules"][rule] for r in rows if r["rules"][rule]["threshold"] is not None]
            points = len(rows[0]["rules"][rule]["curve"])
            entry["rules"][rule] = {
                "curve": [
                    [sum(r["rules"][rule]["curve"][i][k] for r in rows) / len(rows) for k in (0, 1)]
                    for i in range(points)
                ],
                "calibrated_seeds": len(cal),
                "thresholds": [r["rules"][rule]["threshold"] for r in rows],
                "accuracy": seed_interval([c["accuracy"] for c in cal]),
                "mean_layers": seed_interval([c["mean_layers"] for c in cal]),
                "time_ratio": seed_interval([c["timing"]["ratio"] for c in cal]),
            }
        methods[name] = entry
    return {"budget": budget, "methods": methods, "kind": "text"}


def markdown(results: dict[str, Any]) -> list[str]:
    lines = [
        "# Early exit of the text classifiers",
        "",
        f"Thresholds calibrated on the validation texts for at most {results['budget']:g} of accuracy below the full "
        "model's; scored on the test texts (± the 95% interval over seeds). Time: the run that skips layers over "
        "the model's own forward on one evaluation batch (medians).",
        "",
        "| model | full accuracy | rule | accuracy with exits | mean layers run | of L | time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results["methods"].values():
        for rule, r in m["rules"].items():
            lines.append(f"| {m['label']} | {fmt_interval(m['full'])} | {rule} | {fmt_interval(r['accuracy'])} | "
                         f"{fmt_interval(r['mean_layers'], 2)} | {m['depth']} | {fmt_interval(r['time_ratio'], 2)} |")  # fmt: skip
    return lines


def figure(results: dict[str, Any], path: Path, plt: Any) -> None:
    """Accuracy against layers run: truncated (dashed), patience (solid), entropy (dotted); ★ calibrated."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for m in results["methods"].values():
        color = f"C{m['index'] % 10}"
        ax.plot(range(1, m["depth"] + 1), nums(m["fixed"]), "--", color=color, lw=1)
        for rule, style in (("patience", "-"), ("entropy", ":")):
            r = m["rules"].get(rule)
            if r is None:
                continue
            xs, ys = zip(*r["curve"], strict=True)
            ax.plot(xs, ys, style, marker=".", color=color, label=f"{m['label']}, {rule}")
            if r["mean_layers"]["mean"] is not None:
                ax.plot([r["mean_layers"]["mean"]], [r["accuracy"]["mean"]], "*", ms=11, color=color, mec="k")
    integer_axis(ax.xaxis)
    ax.set_xlabel("layers run (mean over texts)")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        "dashed: truncated; solid: PABEE patience; dotted: DeeBERT entropy; ★: calibrated", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    save(fig, path, plt)
