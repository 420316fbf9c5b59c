"""Softmax transformers as in-context optimizers (``task.kind: icl``): Garg et al.'s GPT-2 learner and the
Unrolled Transformer on in-context regression prompts, scored at every prompt length against least squares,
ridge, the Bayes predictor, iterative Newton, GD, CG and Lasso, their layers read as iterations of those
methods (Fu et al. 2023), trained with ERM, under layerwise descent constraints or with LayerSkip's early-exit
loss, and tested under shifts of growing size (variance, skewed covariance, label noise, longer prompts, a
Gaussian mixture).

A unit is the baselines of one seed, or one learner (method) trained for one seed. Modules: ``config``,
``data`` (a seed's prompts, the curriculum stream), ``units``, ``evaluate`` (errors at every prefix, the layer
reading), ``aggregate`` (seed and prompt intervals, paired gaps), ``report``.
"""

from __future__ import annotations

from typing import Any

import torch

from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.icl import report as _report
from unrolled.experiments.icl.aggregate import aggregate
from unrolled.experiments.icl.config import ICLExperiment, ICLTaskConfig, LearnerMethod, ShiftFamily
from unrolled.experiments.icl.data import PromptStream, SeedData
from unrolled.experiments.icl.units import BASELINES, build_learner, plan, run_baselines, run_learner
from unrolled.experiments.registry import register_family
from unrolled.extras import Requirement

__all__ = [
    "ICLExperiment",
    "ICLFamily",
    "ICLTaskConfig",
    "LearnerMethod",
    "PromptStream",
    "SeedData",
    "ShiftFamily",
    "aggregate",
    "build_learner",
]


class ICLFamily(ExperimentFamily):
    """Units: the baselines × seed (phase 0), a learner × seed (phase 1)."""

    kind = "icl"
    config_class = ICLExperiment
    title = "in-context learning (softmax learners)"

    plan = staticmethod(plan)
    aggregate = staticmethod(aggregate)
    report = staticmethod(_report.report)
    summary = staticmethod(_report.summary)

    def requirements(self, cfg: ICLExperiment) -> list[Requirement]:
        if any(m.kind == "gpt2" for m in cfg.methods):
            return [
                Requirement("transformers", "the GPT-2 learner (kind: gpt2; kind: ut needs nothing more)")
            ]
        return []

    def seed_data(self, cfg: ICLExperiment, seed: int, dtype: torch.dtype, device: str) -> SeedData:
        return SeedData(cfg, seed, dtype, device)

    def run_unit(self, unit: Unit, data: SeedData, ctx: UnitContext) -> dict[str, Any]:
        if unit.method == BASELINES:
            return run_baselines(unit, data, ctx)
        return run_learner(unit, data, ctx)


register_family(ICLFamily())
