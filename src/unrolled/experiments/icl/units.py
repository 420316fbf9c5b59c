"""The units of an in-context learning experiment: the baselines of a seed, and a learner trained for a seed.

Every learner of a seed sees the same training prompts (the stream's generator depends on the seed only) and,
for the same architecture, starts from the same weights, so a constrained learner and its ERM baseline differ
by their objective alone: the paired comparison of the shift table.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import torch

from unrolled.constrained.factory import objective_from_config
from unrolled.experiments.aggregate import losses
from unrolled.experiments.family import Unit, UnitContext
from unrolled.experiments.icl.config import ICLExperiment, LearnerMethod
from unrolled.experiments.icl.data import PromptStream, SeedData
from unrolled.experiments.icl.evaluate import (
    evaluate_baselines,
    evaluate_learner,
    learner_errors,
    read_layers,
    tune_baselines,
)
from unrolled.models.icl import GPT2Learner, InContextLearner, Prompts, UTLearner, prompt_mse
from unrolled.seeding import derive_seed, generator
from unrolled.train.loop import train

BASELINES = "baselines"
"""The name of every seed's baseline unit (no method may take it)."""


def plan(cfg: ICLExperiment) -> list[Unit]:
    """Per seed: the baselines (phase 0, nothing to train), then every learner (phase 1), seed-major."""
    units = []
    for seed in cfg.seeds:
        units.append(Unit(BASELINES, seed, spec=None, phase=0, steps=0, cost=1.0))
        for m in cfg.methods:
            steps = m.steps or cfg.train.steps
            cost = steps * m.depth * m.width**2 * cfg.train.batch_size
            units.append(Unit(m.name, seed, spec=m, phase=1, steps=steps, cost=cost))
    return units


def build_learner(method: LearnerMethod, cfg: ICLExperiment, seed: int) -> InContextLearner:
    """The learner a method describes, with positions for the longest evaluated prompt; its initialisation
    depends on the seed and the architecture only (ERM and constrained twins start alike)."""
    init = derive_seed(seed, "icl-init", method.kind, method.width, method.depth, method.heads)
    if method.kind == "gpt2":
        return GPT2Learner(cfg.task.d, cfg.max_points, method.width, method.depth, method.heads, seed=init)
    return UTLearner(
        cfg.task.d,
        cfg.max_points,
        method.width,
        method.depth,
        method.heads,
        activation=method.activation,
        seed=init,
    )


def run_learner(unit: Unit, data: SeedData, ctx: UnitContext) -> dict[str, Any]:
    """Train one learner (ERM, constrained or early-exit), then score it on every split and read its layers."""
    method: LearnerMethod = unit.spec
    cfg: ICLExperiment = ctx.cfg  # type: ignore[assignment]
    t0 = time.perf_counter()
    model = build_learner(method, cfg, unit.seed)
    train_cfg = cfg.train if method.steps is None else cfg.train.model_copy(update={"steps": method.steps})
    stream = PromptStream(
        cfg, data.task, train_cfg, generator(unit.seed, "icl", "train"), ctx.dtype, ctx.device
    )

    def heldout(size: int) -> tuple[Prompts, torch.Tensor]:
        batch = data.task.sample(size, generator(unit.seed, "icl", "constraint"), ctx.dtype, ctx.device)
        prompts = Prompts.from_batch(batch)
        return prompts, prompts.ys

    curve_every = cfg.eval.curve_every

    def on_log(line: dict[str, Any]) -> None:  # before the step's checkpoint: a resumed run logs it once
        if curve_every is not None and data.curve is not None:
            step = int(line["step"])
            if step % curve_every == 0 or step == train_cfg.steps:
                errors = learner_errors(model, data.curve)[-1] / cfg.task.d  # the last layer  [B, N]
                line = {**line, "heldout_curve": losses(errors.mean(dim=0))}
                model.train()
        ctx.log_metrics(line)

    where = f"method {method.name}, seed {unit.seed}"
    objective, heldout_slack = objective_from_config(
        method.constraints or method.early_exit,
        method.depth,
        prompt_mse,
        heldout,
        total_steps=train_cfg.steps,
        where=where,
    )
    result = train(
        model,
        stream,
        train_cfg,
        objective=objective,
        dtype=ctx.dtype,
        device=ctx.device,
        checkpoint=ctx.checkpoint,
        heldout_slack=heldout_slack,
        on_log=on_log,
        on_step=ctx.on_step,
        where=where,
        log_dir=ctx.log_dir,
    )
    record: dict[str, Any] = {
        "method": method.name,
        "seed": unit.seed,
        "depth": None,
        "layers": method.depth,
        "final_train_loss": result.final_loss if math.isfinite(result.final_loss) else None,
        "steps": result.steps,
        "train_seconds": result.seconds,
    }
    if objective.constrained:
        record["multipliers"] = [float(v) for v in objective.multipliers.value]  # type: ignore[attr-defined]
    report = objective.report()
    if report:
        record["objective"] = report
    if curve_every is not None:
        record["learning_curve"] = logged_curve(ctx)
    model.eval()
    record["splits"] = evaluate_learner(model, data.splits)
    reading = cfg.eval.reading
    if reading is not None and data.probe is not None:
        test = data.splits["test"][: reading.prompts]
        record["reading"] = read_layers(model, data.probe, test, cfg.baselines)
    record["seconds"] = time.perf_counter() - t0
    return record


def run_baselines(unit: Unit, data: SeedData, ctx: UnitContext) -> dict[str, Any]:
    """Tune ridge, Lasso and GD on the seed's validation prompts; score every baseline on every split."""
    cfg: ICLExperiment = ctx.cfg  # type: ignore[assignment]
    t0 = time.perf_counter()
    tuned = tune_baselines(data.validation, cfg.baselines, sparse=cfg.task.sparsity is not None)
    record: dict[str, Any] = {
        "method": BASELINES,
        "seed": unit.seed,
        "depth": None,
        "tuned": {
            k: v if not isinstance(v, dict) else {str(s): lr for s, lr in v.items()} for k, v in tuned.items()
        },
        "splits": evaluate_baselines(data.splits, data.tasks, cfg.baselines, tuned),
    }
    record["seconds"] = time.perf_counter() - t0
    return record


def logged_curve(ctx: UnitContext) -> dict[str, list[Any]]:
    """This unit's learning curve from ``metrics.jsonl`` (complete after a resume: the lines of the steps
    before its checkpoint were kept, the later ones logged again)."""
    steps, curves = [], []
    path = ctx.out / "metrics.jsonl"
    for text in path.read_text().splitlines() if path.exists() else []:
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if (
            line.get("method") == ctx.unit.method
            and line.get("seed") == ctx.unit.seed
            and "heldout_curve" in line
        ):
            steps.append(line["step"])
            curves.append(line["heldout_curve"])
    order = sorted(range(len(steps)), key=steps.__getitem__)
    return {"steps": [steps[i] for i in order], "curve": [curves[i] for i in order]}
