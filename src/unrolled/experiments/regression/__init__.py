"""In-context linear regression (Dutta & Sra): Memformers, linear transformers, mixtures of experts and
learnable LFOMs against batched classical first-order methods, layer by layer (``task.kind: regression``).

Modules: ``config`` (methods, evaluation, shifts), ``build`` (config entries to solvers), ``data`` (one
seed's prompts), ``units`` (what each unit does), ``aggregate`` (``results.json``), ``report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.registry import register_family
from unrolled.experiments.regression import report as _report
from unrolled.experiments.regression.aggregate import aggregate
from unrolled.experiments.regression.build import build_classical, build_model, mixture_expert
from unrolled.experiments.regression.config import (
    ClassicalMethod,
    EvalConfig,
    LearnedMethod,
    MixtureMethod,
    RegressionExperiment,
    ShiftConfig,
)
from unrolled.experiments.regression.data import SeedData
from unrolled.experiments.regression.units import plan, run_classical, run_learned, run_mixture
from unrolled.report import plot_loss_vs_layer

__all__ = [
    "ClassicalMethod",
    "EvalConfig",
    "LearnedMethod",
    "MixtureMethod",
    "RegressionExperiment",
    "RegressionFamily",
    "SeedData",
    "ShiftConfig",
    "aggregate",
    "build_classical",
    "build_model",
    "mixture_expert",
]


class RegressionFamily(ExperimentFamily):
    """Units: a learned method × depth × seed, a mixture × depth × seed, a classical method × seed."""

    kind = "regression"
    config_class = RegressionExperiment
    title = "regression"

    plan = staticmethod(plan)
    aggregate = staticmethod(aggregate)
    report = staticmethod(_report.report)
    summary = staticmethod(_report.summary)
    overlay_plot = staticmethod(plot_loss_vs_layer)

    def seed_data(self, cfg: RegressionExperiment, seed: int, dtype: torch.dtype, device: str) -> SeedData:
        return SeedData(cfg, seed, dtype, device)

    def ensembles(self, cfg: RegressionExperiment, units: Sequence[Unit]) -> list[list[Unit]]:
        from unrolled.experiments.regression.ensembles import ensembles

        return ensembles(cfg, units)

    def run_ensemble(
        self, units: Sequence[Unit], data: Sequence[SeedData], ctxs: Sequence[UnitContext]
    ) -> list[dict[str, Any]]:
        from unrolled.experiments.regression.ensembles import run_ensemble

        return run_ensemble(units, data, ctxs)

    def run_unit(self, unit: Unit, data: SeedData, ctx: UnitContext) -> dict[str, Any]:
        method = unit.spec.method
        if isinstance(method, MixtureMethod):
            return run_mixture(unit, data, ctx)
        if isinstance(method, ClassicalMethod):
            return run_classical(unit, data, ctx)
        return run_learned(unit, data, ctx)


register_family(RegressionFamily())
