"""Ensembles of the regression family (issue 30): the seeds of one learned method (or expert) at one depth
train in lockstep as one batched model, and the seeds of one mixture adapt together to each distribution.

Each member's record is the one its unit would have written alone (:mod:`unrolled.train.ensemble`): the same
stream, initialisation, objective, checkpoint and evaluation. Classical units, ``train.ensemble: false``,
``torchrun`` and groups of one run unit by unit. Members whose checkpoints are at different steps (a run
interrupted while it trained unit by unit) train alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unrolled.experiments.family import Unit, UnitContext
from unrolled.experiments.regression.config import ClassicalMethod, LearnedMethod, MixtureMethod
from unrolled.experiments.regression.data import SeedData
from unrolled.experiments.regression.units import (
    learned_record,
    run_learned,
    run_mixtures,
    setup_learned,
)
from unrolled.train.ensemble import EnsembleMismatchError, train_ensemble
from unrolled.train.loop import rank_and_world

#: The most prompt entries a member's batch may hold, B · (n + 1) · (d + 1), for its seeds to train as an
#: ensemble. Measured by benchmarks/bench_ensemble.py on 2 CPU cores: at (d, n, B) = (5, 20, 1000), 126,000
#: entries, five members cost 0.63× of training them one by one; at (20, 200, 1000), 4.2 million, 2.17× (the
#: stacked step no longer fits the caches). Larger batches train unit by unit.
MAX_ENTRIES = 2**19


def pays(cfg: Any) -> bool:
    """Whether the config's batches are small enough for ensembles to pay (:data:`MAX_ENTRIES`)."""
    return cfg.train.batch_size * (cfg.task.n + 1) * (cfg.task.d + 1) <= MAX_ENTRIES


def ensembles(cfg: Any, units: Sequence[Unit]) -> list[list[Unit]]:
    """Groups of units to run together: a learned method (or a mixture's expert, or a mixture) at one depth,
    every seed; the rest alone. Groups keep the order of their first unit in the plan. Nothing is grouped
    with ``train.ensemble: false``, under ``torchrun``, or where ensembles do not pay (:func:`pays`)."""
    if not cfg.train.ensemble or rank_and_world()[1] > 1 or not pays(cfg):
        return [[u] for u in units]
    groups: dict[tuple[Any, ...], list[Unit]] = {}
    for u in units:
        method = u.spec.method
        if isinstance(method, ClassicalMethod):
            key: tuple[Any, ...] = ("alone", u.key)
        else:
            key = (method.name, u.depth, u.spec.variance, u.phase)
        groups.setdefault(key, []).append(u)
    return list(groups.values())


def run_ensemble(
    units: Sequence[Unit], datas: Sequence[SeedData], ctxs: Sequence[UnitContext]
) -> list[dict[str, Any]]:
    method = units[0].spec.method
    if isinstance(method, MixtureMethod):
        return run_mixtures(list(units), list(datas), list(ctxs), adapt_many=_adapt_many)
    assert isinstance(method, LearnedMethod)
    return run_learned_ensemble(units, datas, ctxs)


def run_learned_ensemble(
    units: Sequence[Unit], datas: Sequence[SeedData], ctxs: Sequence[UnitContext]
) -> list[dict[str, Any]]:
    """Train a learned method's seeds at one depth together; each member's record as :func:`run_learned`'s."""
    import time

    t0 = time.perf_counter()
    setups = [setup_learned(u, d, c) for u, d, c in zip(units, datas, ctxs, strict=True)]
    try:
        results = train_ensemble(
            [s.model for s in setups],
            [s.stream for s in setups],
            setups[0].train_cfg,
            objectives=[s.objective for s in setups],
            dtype=ctxs[0].dtype,
            device=ctxs[0].device,
            checkpoints=[c.checkpoint for c in ctxs],
            heldout_slacks=[s.heldout_slack for s in setups],
            on_logs=[c.log_metrics for c in ctxs],
            on_steps=[c.on_step for c in ctxs],
            wheres=[s.where for s in setups],
            log_dirs=[c.log_dir for c in ctxs],
        )
    except EnsembleMismatchError:  # e.g. checkpoints of an interrupted unit-by-unit run: each alone
        return [run_learned(u, d, c) for u, d, c in zip(units, datas, ctxs, strict=True)]
    seconds = (time.perf_counter() - t0) / len(units)
    return [
        learned_record(u, d, s, r, time.perf_counter() - seconds)
        for u, d, s, r in zip(units, datas, setups, results, strict=True)
    ]


def _adapt_many(
    mixtures: list[torch.nn.Module], streams: list[Any], cfg: Any, ctxs: Sequence[UnitContext], wheres: list[str],
    name: str,
) -> list[Any]:  # fmt: skip
    from unrolled.constrained import Objective

    return train_ensemble(
        mixtures,
        streams,
        cfg,
        objectives=[Objective() for _ in mixtures],
        dtype=ctxs[0].dtype,
        device=ctxs[0].device,
        on_steps=[c.on_step for c in ctxs],
        wheres=wheres,
        log_dirs=[c.log_dir / f"adapt-{name}" for c in ctxs],
    )
