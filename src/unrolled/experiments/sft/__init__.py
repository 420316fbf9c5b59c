"""Constrained supervised fine-tuning of causal LMs with perturbed token embeddings (Porras-Valenzuela, Hadou &
Ribeiro, Sec. 5.3) (``task.kind: sft``).

Units: every method (ERM or constrained, :class:`~unrolled.train.sft.ConstrainedSFTTrainer`) × seed trains
the base model, tests eval token accuracy and the layerwise logit-lens loss at every test γ, and answers the
win-rate prompts (phase 1); then one judging unit per seed compares every method with the baseline (phase 2).

Modules: ``config``, ``data`` (one seed's split and TRL datasets), ``unit`` (train, test, generate),
``evaluate`` (token accuracy and layerwise loss), ``judging`` (the win-rate unit), ``aggregate``, ``report``.
"""

from __future__ import annotations

from typing import Any

import torch

from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.registry import register_family
from unrolled.experiments.sft import report as _report
from unrolled.experiments.sft.aggregate import aggregate
from unrolled.experiments.sft.config import WINRATE_UNIT, SFTExperiment, SFTMethod
from unrolled.extras import Requirement

__all__ = ["SFTExperiment", "SFTFamily", "SFTMethod", "aggregate"]


class SFTFamily(ExperimentFamily):
    """Units: a method × seed fine-tunes, tests and generates; then a judging unit per seed."""

    kind = "sft"
    config_class = SFTExperiment
    title = "constrained SFT"

    def requirements(self, cfg: SFTExperiment) -> list[Requirement]:
        return [
            Requirement(m, "constrained SFT")
            for m in ("transformers", "trl", "peft", "datasets", "accelerate")
        ]

    def plan(self, cfg: SFTExperiment) -> list[Unit]:
        units = []
        for seed in cfg.seeds:
            for m in (m for m in cfg.methods if m.runs_on(seed)):
                steps = cfg.train.steps if m.finetune else 0
                cost = max(steps, 1) * (1.0 if m.is_erm or not m.finetune else 2.0)
                units.append(Unit(m.name, seed, None, m, phase=1, steps=steps, cost=cost))
            if cfg.winrate is not None:
                on_seed = sum(m.runs_on(seed) for m in cfg.methods)
                comparisons = (on_seed - 1) * len(cfg.winrate.gammas) * len(cfg.winrate.judges)
                units.append(Unit(WINRATE_UNIT, seed, None, None, phase=2, steps=comparisons, cost=1.0))
        return units

    def seed_data(self, cfg: SFTExperiment, seed: int, dtype: torch.dtype, device: str) -> Any:
        from unrolled.experiments.sft.data import SFTSeedData

        return SFTSeedData(cfg.task, seed)

    def run_unit(self, unit: Unit, data: Any, ctx: UnitContext) -> dict[str, Any]:
        from unrolled.experiments.hf_progress import quiet_transformers

        with quiet_transformers():
            if unit.method == WINRATE_UNIT:
                from unrolled.experiments.sft.judging import run_winrate_unit

                return run_winrate_unit(unit, data, ctx)
            from unrolled.experiments.sft.unit import run_train_unit

            return run_train_unit(unit, data, ctx)

    aggregate = staticmethod(aggregate)
    report = staticmethod(_report.report)
    summary = staticmethod(_report.summary)
    overlay_plot = staticmethod(_report.plot_accuracy)


register_family(SFTFamily())
