"""Early exit for the video denoisers of a finished run (issue 31): RMSE against layers run.

For every denoiser a run checkpointed (``checkpoints/<method>/seed<s>.pt``, the final step) and every seed, at
the training noise level: the denoiser truncated after layer l, and the optimizer's stopping rule per clip
(:class:`~unrolled.exits.SmallStep`: stop when the denoised clip moves by less than ``tol`` of its size),
swept over ``tol`` and calibrated on validation clips of the training videos for the fewest mean layers within
``budget`` (relative, 2% by default) of the full model's RMSE; scored on the run's test clips, with the wall
time of the run that skips layers against the full forward on the same clips.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unrolled.exits import (
    Budget,
    Quality,
    SmallStep,
    calibrate,
    fixed_depth_curve,
    layer_predictions,
    simulate_exits,
    sweep,
    timed,
)
from unrolled.experiments.denoising.config import DenoisingExperiment
from unrolled.experiments.denoising.data import DenoisingData
from unrolled.experiments.denoising.reference import noisy_test_chunks
from unrolled.experiments.denoising.unit import build_denoiser, method_train_gamma
from unrolled.experiments.exit_summary import small_step_summary
from unrolled.experiments.icl.aggregate import fmt_interval
from unrolled.report import integer_axis, nums, save
from unrolled.seeding import generator
from unrolled.train.checkpoint import load_checkpoint

TOLS = [10 ** (k / 4) for k in range(-12, 1)]  # 1e-3 … 1

#: RMSE on the 0–255 scale of predictions clamped to [0, 1], as the run reports it.
RMSE255 = Quality(
    "rmse", lambda p, x: 255.0 * math.sqrt(float((p.clamp(0, 1) - x).float().square().mean())), False
)


def _layers(model: torch.nn.Module, noisy: Tensor, chunk: int = 64) -> Tensor:
    """Every layer's denoised clips ``[L + 1, N, T, C, H, W]``, chunk by chunk."""
    return torch.cat([layer_predictions(model, x) for x in noisy.split(chunk)], dim=1)


def analyse(run_dir: Path, cfg: DenoisingExperiment, *, samples: int = 512, budget: float = 0.02,
            progress: Any = None) -> dict[str, Any]:  # fmt: skip
    """Exit curves and calibrated exits of every denoiser checkpointed in ``run_dir`` (module docstring)."""
    rule = SmallStep()
    per_method: dict[str, list[dict[str, Any]]] = {}
    for seed in cfg.seeds:
        data: DenoisingData | None = None
        for method in cfg.methods:
            path = run_dir / "checkpoints" / method.name / f"seed{seed}.pt"
            if not path.is_file():
                continue
            data = data or DenoisingData(cfg, seed)
            model = build_denoiser(method, cfg.task, generator(seed, method.name, "init"))
            model.load_state_dict(load_checkpoint(path)["model"])
            model.eval()
            gamma = method_train_gamma(cfg, method)
            noise = data.noise(cfg, 0.0).with_gamma(gamma)
            val_clean = data.training_video_clips(cfg, samples, "exit-validation")
            val_noisy = noise.apply(val_clean, generator(seed, "exit-validation-noise", gamma))
            pairs = list(noisy_test_chunks(data.test[:samples], data.noise(cfg, 0.0), gamma, seed))
            test_noisy = torch.cat([n for n, _ in pairs])
            test_clean = torch.cat([c for _, c in pairs])
            val_pred, test_pred = _layers(model, val_noisy), _layers(model, test_noisy)
            chosen = calibrate(val_pred, val_clean, rule, TOLS, RMSE255, Budget(budget))
            row: dict[str, Any] = {
                "seed": seed,
                "gamma": gamma,
                "full": RMSE255(test_pred[-1], test_clean),
                "fixed": [p.quality for p in fixed_depth_curve(test_pred, test_clean, RMSE255)],
                "small_step": [
                    (p.mean_layers, p.quality) for p in sweep(test_pred, test_clean, rule, TOLS, RMSE255)
                ],
                "tol": None if chosen.rule is None else chosen.rule.threshold,
            }
            if chosen.rule is not None:
                result = simulate_exits(test_pred, chosen.rule)
                row.update({"rmse": RMSE255(result.prediction, test_clean), "mean_layers": result.mean_layers,
                            "timing": timed(model, test_noisy[:32], chosen.rule)})  # fmt: skip
            per_method.setdefault(method.name, []).append(row)
            if progress is not None:
                progress(f"{method.name} seed {seed}")
    return _aggregate(cfg, per_method, budget)


def _aggregate(
    cfg: DenoisingExperiment, per_method: dict[str, list[dict[str, Any]]], budget: float
) -> dict[str, Any]:
    labels = {m.name: m.label or m.name for m in cfg.methods}
    methods = {}
    for name, rows in per_method.items():
        methods[name] = {
            "label": labels[name],
            "index": list(labels).index(name),
            **small_step_summary(rows, len(rows[0]["fixed"]), len(TOLS), "rmse"),
            "per_seed": rows,
        }
    return {"budget": budget, "tols": TOLS, "methods": methods, "kind": "video"}


def markdown(results: dict[str, Any]) -> list[str]:
    lines = [
        "# Early exit of the video denoisers",
        "",
        f"Per clip, the small-step rule, tol calibrated on validation clips of the training videos for at most "
        f"{100 * results['budget']:g}% more RMSE than the full model; scored on the test clips at the training noise "
        "level (± the 95% interval over seeds). Time: the run that skips layers over the model's forward, 32 clips.",
        "",
        "| denoiser | full RMSE | with exits | mean layers run | of L | time ratio |",
        "|---|---|---|---|---|---|",
    ]
    for m in results["methods"].values():
        c = m["calibrated"]
        lines.append(f"| {m['label']} | {fmt_interval(m['full'], 2)} | {fmt_interval(c['rmse'], 2)} | {fmt_interval(c['mean_layers'], 2)} | "
                     f"{m['depth']} | {fmt_interval(c['time_ratio'], 2)} |")  # fmt: skip
    return lines


def figure(results: dict[str, Any], path: Path, plt: Any) -> None:
    """RMSE against layers run: truncated (dashed), small-step exits (solid), ★ calibrated."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for m in results["methods"].values():
        color = f"C{m['index'] % 10}"
        ax.plot(range(1, m["depth"] + 1), nums(m["fixed"]), "--", color=color, lw=1)
        ss = m["small_step"]
        ax.plot(ss["mean_layers"], nums(ss["rmse"]), "-", marker=".", color=color, label=m["label"])
        c = m["calibrated"]
        if c["mean_layers"]["mean"] is not None:
            ax.plot([c["mean_layers"]["mean"]], [c["rmse"]["mean"]], "*", ms=11, color=color, mec="k")
    integer_axis(ax.xaxis)
    ax.set_xlabel("layers run (mean over clips)")
    ax.set_ylabel("test RMSE (0–255) at the training noise level")
    ax.set_title(
        "dashed: truncated; solid: stop when the step is small (tol swept); ★: calibrated", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path, plt)
