"""The units of a regression experiment and how each runs: train a learned solver, adapt a mixture, run a
classical method.

A unit is a learned method at one depth for one seed, a mixture at one depth for one seed, or a classical
method for one seed at every depth. A mixture's experts are units of their own, in phase 0 (before the
mixtures), keyed by their architecture and variance so mixtures that differ only in gating or adaptation
share them.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from unrolled.constrained.factory import objective_from_config
from unrolled.experiments.aggregate import losses
from unrolled.experiments.family import Unit, UnitContext
from unrolled.experiments.regression.build import build_classical, build_model, mixture_expert
from unrolled.experiments.regression.config import (
    ClassicalMethod,
    LearnedMethod,
    MixtureMethod,
    RegressionExperiment,
)
from unrolled.experiments.regression.data import SeedData
from unrolled.models import MixtureOfExperts
from unrolled.seeding import generator
from unrolled.solvers import default_lr_grid, tune
from unrolled.solvers.tuning import DEFAULT_MOMENTA
from unrolled.tasks.regression import RegressionTask
from unrolled.train.checkpoint import load_checkpoint
from unrolled.train.config import TrainConfig
from unrolled.train.loop import NonFiniteLossError, RegressionStream, train
from unrolled.trajectory import squared_error

Method = LearnedMethod | MixtureMethod | ClassicalMethod


@dataclass(frozen=True)
class Work:
    """A regression unit's spec: the method, and for a mixture's expert the variance it is trained on."""

    method: Method
    variance: float | None = None


def _unit(
    cfg: RegressionExperiment, method: Method, seed: int, depth: int | None, variance: float | None = None
) -> Unit:
    """A unit with its progress steps and its relative cost (steps × layers × prompts)."""
    free = 3.0 if getattr(method, "B", "zero") == "free" else 1.0
    steps, cost = 0, 0.0
    if isinstance(method, MixtureMethod):
        steps = method.adapt_steps * (1 + len(cfg.eval.shifts))
        cost = steps * (depth or 1) * len(method.expert_variances) * method.adapt_size * free
    elif isinstance(method, LearnedMethod):
        steps = cfg.train.steps
        cost = steps * (depth or 1) * (method.batch_size or cfg.train.batch_size) * free
    phase = 0 if variance is not None else 1
    return Unit(method.name, seed, depth, Work(method, variance), phase=phase, steps=steps, cost=cost)


def plan(cfg: RegressionExperiment) -> list[Unit]:
    """Every unit: the mixtures' experts first (shared between mixtures), then the rest, seed-major."""
    units: dict[str, Unit] = {}
    for seed in cfg.seeds:
        for m in cfg.methods:
            if isinstance(m, MixtureMethod):
                for v in m.expert_variances:
                    for L in cfg.depths:
                        unit = _unit(cfg, mixture_expert(m, v), seed, L, v)
                        units.setdefault(unit.key, unit)
    out = list(units.values())
    for seed in cfg.seeds:
        for m in cfg.methods:
            if isinstance(m, ClassicalMethod):
                out.append(_unit(cfg, m, seed, None))
            else:
                out.extend(_unit(cfg, m, seed, L) for L in cfg.depths)
    return out


@dataclass
class LearnedSetup:
    """What training one learned unit needs, built as :func:`run_learned` builds it (shared with ensembles)."""

    model: torch.nn.Module
    stream: RegressionStream
    train_cfg: TrainConfig
    objective: Any
    heldout_slack: Any
    where: str


def setup_learned(unit: Unit, data: SeedData, ctx: UnitContext) -> LearnedSetup:
    """The model, stream, training config and objective of a learned unit (or a mixture's expert)."""
    work: Work = unit.spec
    method = work.method
    assert isinstance(method, LearnedMethod) and unit.depth is not None
    cfg: RegressionExperiment = ctx.cfg  # type: ignore[assignment]
    model = build_model(
        method, cfg.task.d, cfg.task.n, unit.depth, generator(unit.seed, method.name, unit.depth, "init")
    )
    train_cfg = cfg.train
    if method.batch_size is not None:
        train_cfg = train_cfg.model_copy(update={"batch_size": method.batch_size})
    if work.variance is None:
        task, train_gen = data.task, generator(unit.seed, "train")
    else:  # a mixture's expert: the task scaled to the expert's variance, its own prompts
        scaled = cfg.task.model_copy(update={"variance": work.variance})
        task, train_gen = RegressionTask(scaled, unit.seed), generator(unit.seed, "train", work.variance)
    stream = RegressionStream(task, train_cfg, train_gen, ctx.dtype, ctx.device)

    def heldout(size: int) -> tuple[Any, torch.Tensor]:
        batch = data.task.sample(size, generator(data.seed, "constraint"), ctx.dtype, ctx.device)
        return batch, batch.y_query

    where = f"method {method.name}, seed {unit.seed}, depth {unit.depth}"
    objective, heldout_slack = objective_from_config(
        method.constraints, unit.depth, squared_error, heldout, total_steps=train_cfg.steps, where=where
    )
    return LearnedSetup(model, stream, train_cfg, objective, heldout_slack, where)


def learned_record(unit: Unit, data: SeedData, setup: LearnedSetup, result: Any, t0: float) -> dict[str, Any]:
    """A trained learned unit's record: its training summary and layerwise losses on every split."""
    work: Work = unit.spec
    method, model, objective = work.method, setup.model, setup.objective
    record: dict[str, Any] = {
        "method": method.name,
        "seed": unit.seed,
        "depth": unit.depth,
        "final_train_loss": result.final_loss if math.isfinite(result.final_loss) else None,
        "steps": result.steps,
    }
    if work.variance is not None:
        record["expert_variance"] = work.variance
    if objective.constrained:
        record["multipliers"] = [float(v) for v in objective.multipliers.value]
        record["objective"] = objective.report()
    with torch.no_grad():
        record["layerwise"] = {
            split: {str(unit.depth): losses(model(batch).layerwise_losses(batch.y_query))}
            for split, batch in data.eval_splits().items()
        }
        if setup.train_cfg.protocol == "fixed_batch":
            tb = setup.stream.batch
            assert tb is not None
            record["layerwise"]["train"] = {str(unit.depth): losses(model(tb).layerwise_losses(tb.y_query))}
    record["seconds"] = time.perf_counter() - t0
    return record


def run_learned(unit: Unit, data: SeedData, ctx: UnitContext) -> dict[str, Any]:
    """Train a learned solver at one depth (ERM or constrained), then score it on every split."""
    t0 = time.perf_counter()
    s = setup_learned(unit, data, ctx)
    result = train(
        s.model,
        s.stream,
        s.train_cfg,
        objective=s.objective,
        dtype=ctx.dtype,
        device=ctx.device,
        checkpoint=ctx.checkpoint,
        heldout_slack=s.heldout_slack,
        on_log=ctx.log_metrics,
        on_step=ctx.on_step,
        where=s.where,
        log_dir=ctx.log_dir,
    )
    return learned_record(unit, data, s, result, t0)


def _load_expert(
    cfg: RegressionExperiment, m: MixtureMethod, variance: float, seed: int, depth: int, ctx: UnitContext
) -> torch.nn.Module:
    """A trained expert of ``m`` (phase 0 wrote its final checkpoint)."""
    expert = mixture_expert(m, variance)
    ckpt = ctx.checkpoint_of(Unit(expert.name, seed, depth))
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: the expert of {m.name} for σ² = {variance:g} was not trained")
    model = build_model(expert, cfg.task.d, cfg.task.n, depth, generator(seed, "unused"))
    model.load_state_dict(load_checkpoint(ckpt)["model"])
    return model.to(device=ctx.device, dtype=ctx.dtype)


def run_mixture(unit: Unit, data: SeedData, ctx: UnitContext) -> dict[str, Any]:
    """Adapt a mixture of trained experts to every evaluated distribution; score it in and out of sample.

    For the task itself (``base``) and every shift: fresh copies of the frozen experts, gates fit on one
    adaptation batch of that distribution, then layerwise losses on that batch (``adapt:<name>``) and on
    the distribution's held-out prompts (``test`` / ``shift:<name>``).
    """
    return run_mixtures([unit], [data], [ctx])[0]


AdaptMany = Any
"""``(mixtures, streams, cfg, ctxs, wheres, names) -> results``: adapts several mixtures at once (an ensemble)."""


def adapt_config(m: MixtureMethod) -> TrainConfig:
    return TrainConfig(
        protocol="fixed_batch",
        steps=m.adapt_steps,
        batch_size=m.adapt_size,
        optimizer="adam",
        lr=m.adapt_lr,
        log_every=m.adapt_steps,
        checkpoint_every=m.adapt_steps,
    )


def run_mixtures(
    units: list[Unit], datas: list[SeedData], ctxs: list[UnitContext], adapt_many: AdaptMany | None = None
) -> list[dict[str, Any]]:
    """:func:`run_mixture` for units of one mixture method and depth (their seeds differ). With ``adapt_many``
    the seeds' mixtures adapt to each distribution together (it raises :class:`NonFiniteLossError` if one
    diverges: then each adapts alone, and the diverged one is recorded as such, as alone)."""
    m = units[0].spec.method
    assert isinstance(m, MixtureMethod) and units[0].depth is not None
    cfg: RegressionExperiment = ctxs[0].cfg  # type: ignore[assignment]
    t0 = time.perf_counter()
    adapt_cfg = adapt_config(m)
    depth = str(units[0].depth)
    layerwise: list[dict[str, dict[str, list[float | None]]]] = [{} for _ in units]
    adapted: list[dict[str, Any]] = [{} for _ in units]
    trained = [
        [_load_expert(cfg, m, v, u.seed, u.depth, c) for v in m.expert_variances]  # type: ignore[arg-type]
        for u, c in zip(units, ctxs, strict=True)
    ]
    for name in ["base", *datas[0].shift_tasks]:
        mixtures, streams, trainable = [], [], []
        for u, data, ctx, experts in zip(units, datas, ctxs, trained, strict=True):
            task = data.task if name == "base" else data.shift_tasks[name]
            mixture = MixtureOfExperts(copy.deepcopy(experts), gate=m.gate, gate_init=m.gate_init)
            trainable.append(mixture.set_adaptable(m.adapt))  # each distribution adapts its own copy
            mixtures.append(mixture)
            streams.append(
                RegressionStream(task, adapt_cfg, generator(u.seed, "adapt", name), ctx.dtype, ctx.device)
            )
        wheres = [f"adapting {m.name} to {name}, seed {u.seed}, depth {u.depth}" for u in units]
        results: list[Any] = []
        if adapt_many is not None and len(units) > 1:
            try:
                results = adapt_many(mixtures, streams, adapt_cfg, ctxs, wheres, name)
            except NonFiniteLossError:  # some seed diverges: each adapts alone, as it would have
                for mixture, experts in zip(mixtures, trained, strict=True):
                    fresh = MixtureOfExperts(copy.deepcopy(experts), gate=m.gate, gate_init=m.gate_init)
                    fresh.set_adaptable(m.adapt)
                    mixture.load_state_dict(fresh.state_dict())
                for i, stream in enumerate(streams):
                    streams[i] = RegressionStream(stream.task, adapt_cfg, generator(units[i].seed, "adapt", name),
                                                  ctxs[i].dtype, ctxs[i].device)  # fmt: skip
                results = []
        for i, (u, ctx, mixture, stream) in enumerate(zip(units, ctxs, mixtures, streams, strict=True)):
            split, test = (
                ("test", datas[i].test) if name == "base" else (f"shift:{name}", datas[i].shifts[name])
            )
            if results:
                result = results[i]
            else:
                try:
                    result = train(mixture, stream, adapt_cfg, dtype=ctx.dtype, device=ctx.device,
                                   on_step=ctx.on_step, where=wheres[i], log_dir=ctx.log_dir / f"adapt-{name}")  # fmt: skip
                except NonFiniteLossError as exc:  # the experts blow up on this distribution: record, go on
                    none: list[float | None] = [None] * (u.depth + 1)  # type: ignore[operator]
                    layerwise[i][split] = {depth: none}
                    layerwise[i][f"adapt:{name}"] = {depth: none}
                    adapted[i][name] = {"diverged": str(exc), "trainable": trainable[i]}
                    continue
            adapt_batch = stream.batch
            assert adapt_batch is not None
            with torch.no_grad():
                layerwise[i][split] = {depth: losses(mixture(test).layerwise_losses(test.y_query))}
                layerwise[i][f"adapt:{name}"] = {
                    depth: losses(mixture(adapt_batch).layerwise_losses(adapt_batch.y_query))
                }
            adapted[i][name] = {
                "gates": losses(mixture.gates()),
                "final_adapt_loss": result.final_loss if math.isfinite(result.final_loss) else None,
                "trainable": trainable[i],
            }
    seconds = (time.perf_counter() - t0) / len(units)
    return [
        {"method": m.name, "seed": u.seed, "depth": u.depth, "layerwise": layerwise[i], "adapted": adapted[i],
         "seconds": seconds}
        for i, u in enumerate(units)
    ]  # fmt: skip


def run_classical(unit: Unit, data: SeedData, ctx: UnitContext) -> dict[str, Any]:
    """A classical method at every depth: fixed step sizes (one trajectory), or tuned per depth."""
    m = unit.spec.method
    assert isinstance(m, ClassicalMethod)
    cfg: RegressionExperiment = ctx.cfg  # type: ignore[assignment]
    t0 = time.perf_counter()
    splits = data.eval_splits()
    if data.train_batch is not None:
        splits["train"] = data.train_batch
    record: dict[str, Any] = {"method": m.name, "seed": unit.seed, "depth": None}
    settings: dict[int, tuple[float | None, float | None]]
    if m.tune:
        lr_grid = m.lr_grid or default_lr_grid(data.validation, m.objective)
        if m.kind in ("momentum", "nesterov"):
            mom_grid = (m.momentum,) if m.momentum is not None else (m.momentum_grid or DEFAULT_MOMENTA)
        else:
            mom_grid = None
        tuned = tune(
            lambda lr, mom: build_classical(m, data.task, lr, mom),
            data.validation,
            cfg.depths,
            lr_grid,
            mom_grid,
        )
        settings = {L: (t.lr, t.momentum) for L, t in tuned.items()}
        record["tuned"] = {
            str(L): {"lr": t.lr, "momentum": t.momentum, "validation_loss": t.validation_loss}
            for L, t in tuned.items()
        }
    else:
        settings = dict.fromkeys(cfg.depths, (m.lr, m.momentum))
    layerwise: dict[str, dict[str, list[float | None]]] = {name: {} for name in splits}
    with torch.no_grad():
        for name, batch in splits.items():
            if not m.tune:  # one trajectory serves every depth
                traj = build_classical(m, data.task, m.lr, m.momentum)(batch, cfg.max_depth)
                curve = losses(traj.layerwise_losses(batch.y_query))
                for L in cfg.depths:
                    layerwise[name][str(L)] = curve[: L + 1]
                continue
            for L in cfg.depths:
                lr, mom = settings[L]
                traj = build_classical(m, data.task, lr, mom)(batch, L)
                layerwise[name][str(L)] = losses(traj.layerwise_losses(batch.y_query))
    record["layerwise"] = layerwise
    record["seconds"] = time.perf_counter() - t0
    return record
