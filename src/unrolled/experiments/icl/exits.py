"""Early exit for the in-context learners of a finished run (issue 31): error against layers run.

For every trained learner of a run folder (its final checkpoint) and every seed:

* the model truncated after layer l (error at the last pair against l);
* the optimizer's stopping rule per prompt (:class:`~unrolled.exits.SmallStep`: stop when the predictions move
  by less than ``tol`` of their size), swept over ``tol``, and calibrated on held-out prompts of the training
  distribution for the smallest mean depth whose error is at most ``budget`` above the full model's; then
  scored on the test prompts, where nothing was chosen, with its wall time against the full model;
* beside them, CG on each prompt's normal equations stopped on its relative residual (iterations run against
  error), the classical method's own early exit.

``unrolled exits RUN_DIR`` writes ``exits.json``, ``exits.md`` and ``exit_curves.png`` into the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unrolled.exits import (
    Budget,
    Quality,
    SmallStep,
    calibrate,
    fixed_depth_curve,
    layer_predictions,
    run_with_exit,
    simulate_exits,
    sweep,
    timed,
)
from unrolled.experiments.exit_summary import small_step_summary
from unrolled.experiments.icl.aggregate import fmt_interval
from unrolled.experiments.icl.config import ICLExperiment
from unrolled.experiments.icl.units import build_learner
from unrolled.models.icl import Prompts
from unrolled.report import integer_axis, nums, plain_log_axis, save
from unrolled.seeding import generator
from unrolled.solvers.prefix import PrefixCG, PrefixProblems
from unrolled.tasks.regression import RegressionTask
from unrolled.train.checkpoint import load_checkpoint

TOLS = [10 ** (k / 4) for k in range(-12, 1)]  # 1e-3 … 1, four a decade
CG_TOLS = [10.0**-k for k in range(13)]  # 1 … 1e-12


def last_pair_error(d: int) -> Quality:
    """The squared error at the last pair over d (Garg et al.'s normalisation), lower is better."""
    return Quality("error", lambda p, y: float((p[:, -1] - y[:, -1]).float().square().mean()) / d, False)


def _prompts(cfg: ICLExperiment, seed: int, size: int, tag: str) -> Prompts:
    regression, points = cfg.splits()["test"]
    task = RegressionTask(regression, seed)
    return Prompts.from_batch(task.sample(size, generator(seed, "icl", tag), n=points - 1))


def cg_curve(prompts: Prompts, d: int) -> dict[str, list[float]]:
    """CG on the last prefix's normal equations of every prompt, stopped when ‖S w − b‖ ≤ tol ‖b‖: mean
    iterations and error at the last pair for every tol of :data:`CG_TOLS`."""
    steps = 2 * d
    trajectory = PrefixCG()(prompts, steps)
    p = PrefixProblems.from_prompts(prompts)
    states = torch.stack([s.to(torch.float64) for s in trajectory.states])  # [K+1, B, N, d]
    w = states[:, :, -1]  # the last prefix  [K+1, B, d]
    residual = ((p.S[:, -1] @ w.unsqueeze(-1)).squeeze(-1) - p.b[:, -1]).norm(dim=-1)  # [K+1, B]
    relative = residual / p.b[:, -1].norm(dim=-1).clamp_min(1e-300)
    predictions = (w * p.xs[:, -1].unsqueeze(0)).sum(-1)  # [K+1, B]
    target = prompts.ys[:, -1].to(torch.float64)
    out: dict[str, list[float]] = {"tol": [], "iterations": [], "error": []}
    for tol in CG_TOLS:
        met = relative <= tol
        met[-1] = True  # stop at the last iteration at the latest
        first = met.float().argmax(dim=0)  # the first iteration that meets it  [B]
        picked = predictions[first, torch.arange(w.shape[1])]
        out["tol"].append(tol)
        out["iterations"].append(float(first.float().mean()))
        out["error"].append(float((picked - target).square().mean()) / d)
    return out


def _checkpoint(run_dir: Path, method: str, seed: int) -> Path | None:
    path = run_dir / "checkpoints" / method / f"seed{seed}.pt"
    return path if path.is_file() else None


def analyse(run_dir: Path, cfg: ICLExperiment, *, prompts: int = 2000, budget: float = 0.01,
            timing_prompts: int = 1000, progress: Any = None) -> dict[str, Any]:  # fmt: skip
    """Exit curves and calibrated exits of every learner checkpointed in ``run_dir`` (module docstring)."""
    d = cfg.task.d
    quality = last_pair_error(d)
    rule = SmallStep()
    per_method: dict[str, list[dict[str, Any]]] = {}
    cg: list[dict[str, list[float]]] = []
    for seed in cfg.seeds:
        validation = _prompts(cfg, seed, prompts, "exit-validation")
        test = _prompts(cfg, seed, cfg.eval.prompts, "test")[:prompts]  # the run's own test prompts
        cg.append(cg_curve(test, d))
        for method in cfg.methods:
            path = _checkpoint(run_dir, method.name, seed)
            if path is None:
                continue
            model = build_learner(method, cfg, seed)
            model.load_state_dict(load_checkpoint(path)["model"])
            model.eval()
            val_pred, test_pred = layer_predictions(model, validation), layer_predictions(model, test)
            chosen = calibrate(val_pred, validation.ys, rule, TOLS, quality, Budget(budget, relative=False))
            row: dict[str, Any] = {
                "seed": seed,
                "full": quality(test_pred[-1], test.ys),
                "fixed": [p.quality for p in fixed_depth_curve(test_pred, test.ys, quality)],
                "small_step": [
                    (p.mean_layers, p.quality) for p in sweep(test_pred, test.ys, rule, TOLS, quality)
                ],
                "tol": chosen.rule.threshold if chosen.rule is not None else None,
            }
            if chosen.rule is not None:
                simulated = simulate_exits(test_pred, chosen.rule)
                timing_batch = test[:timing_prompts]
                ran = run_with_exit(model, timing_batch, chosen.rule)
                expected = simulate_exits(test_pred[:, :timing_prompts], chosen.rule)
                if ran.layers.tolist() != expected.layers.tolist():  # the runner must skip what it says
                    raise RuntimeError(
                        f"{method.name} seed {seed}: the runner's exits differ from the simulated"
                    )
                row.update({
                    "error": quality(simulated.prediction, test.ys),
                    "mean_layers": simulated.mean_layers,
                    "timing": timed(model, timing_batch, chosen.rule),
                })  # fmt: skip
            per_method.setdefault(method.name, []).append(row)
            if progress is not None:
                progress(f"{method.name} seed {seed}")
    return _aggregate(cfg, per_method, cg, budget)


def _aggregate(cfg: ICLExperiment, per_method: dict[str, list[dict[str, Any]]], cg: list[dict[str, list[float]]],
               budget: float) -> dict[str, Any]:  # fmt: skip
    methods: dict[str, Any] = {}
    labels = {m.name: m.label or m.name for m in cfg.methods}
    depths = {m.name: m.depth for m in cfg.methods}
    for name, rows in per_method.items():
        methods[name] = {
            "label": labels[name],
            "index": list(labels).index(name),  # its place among the config's methods: its colour
            **small_step_summary(rows, depths[name], len(TOLS), "error"),
            "per_seed": rows,
        }
    cg_mean = {
        k: [sum(c[k][i] for c in cg) / len(cg) for i in range(len(CG_TOLS))] for k in ("iterations", "error")
    }
    return {"budget": budget, "tols": TOLS, "methods": methods, "cg": {"tol": CG_TOLS, **cg_mean},
            "d": cfg.task.d, "points": cfg.task.points}  # fmt: skip


def markdown(results: dict[str, Any]) -> list[str]:
    """The calibrated table of ``exits.md``."""
    lines = [
        "# Early exit of the in-context learners",
        "",
        f"Per prompt, the optimizer's stopping rule (stop when the predictions move by less than tol of their size), "
        f"tol calibrated on held-out prompts for at most +{results['budget']:g} of error at the last pair over the "
        "full model's; scored on the run's test prompts (± the 95% interval over seeds). Time: the run that "
        "skips layers over the model's own forward on the same 1,000 prompts (medians).",
        "",
        "| learner | full model | with exits | mean layers run | of L | time ratio | tol per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results["methods"].values():
        c = m["calibrated"]
        tols = ", ".join("–" if t is None else f"{t:.2g}" for t in c["tol"])
        lines.append(f"| {m['label']} | {fmt_interval(m['full'])} | {fmt_interval(c['error'])} | {fmt_interval(c['mean_layers'], 2)} | "
                     f"{m['depth']} | {fmt_interval(c['time_ratio'], 2)} | {tols} |")  # fmt: skip
    cg = results["cg"]
    lines += ["", "CG stopped on its relative residual (mean iterations → error at the last pair):", ""]
    lines.append(" · ".join(f"tol {t:g}: {i:.1f} → {e:.3g}" for t, i, e in
                            zip(cg["tol"], cg["iterations"], cg["error"], strict=True) if t in (1e-1, 1e-2, 1e-4, 1e-8)))  # fmt: skip
    return lines


def figure(results: dict[str, Any], path: Path, plt: Any) -> None:
    """Error at the last pair against layers run (truncated: dashed; small-step exits: solid), and CG."""
    fig, (ax, ax_cg) = plt.subplots(1, 2, figsize=(11.5, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for m in results["methods"].values():
        color = f"C{m['index'] % 10}"
        ax.plot(range(1, m["depth"] + 1), nums(m["fixed"]), "--", color=color, lw=1)
        ss = m["small_step"]
        ax.plot(ss["mean_layers"], nums(ss["error"]), "-", marker=".", color=color, label=m["label"])
        c = m["calibrated"]
        if c["mean_layers"]["mean"] is not None:
            ax.plot([c["mean_layers"]["mean"]], [c["error"]["mean"]], "*", ms=12, color=color, mec="k")
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    integer_axis(ax.xaxis)
    ax.set_xlabel("layers run (mean over prompts)")
    ax.set_ylabel(f"squared error / d at the last pair (n = {results['points'] - 1})")
    ax.set_title(
        "solid: stop when the step is small (tol swept); dashed: truncated; ★: calibrated", fontsize=9
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    cg = results["cg"]
    ax_cg.plot(cg["iterations"], [max(e, 1e-12) for e in cg["error"]], "k-o", ms=3)
    ax_cg.set_yscale("log")
    plain_log_axis(ax_cg.yaxis)
    ax_cg.set_xlabel("CG iterations (mean over prompts)")
    ax_cg.set_ylabel("squared error / d (1e-12: exact)")
    ax_cg.set_title("CG stopped on its residual (tol swept)", fontsize=9)
    ax_cg.grid(alpha=0.3, which="both")
    save(fig, path, plt)
