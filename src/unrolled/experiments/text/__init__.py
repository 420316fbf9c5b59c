"""Text classification with perturbed token embeddings (Porras-Valenzuela, Hadou & Ribeiro, Sec. 5.2)
(``task.kind: text``).

Pretrained Hugging Face encoders (MiniLM offline; DistilBERT, RoBERTa by name) and the Unrolled Transformer,
fine-tuned with ERM or under layerwise descent constraints through :class:`~unrolled.train.hf.ConstrainedTrainer`,
then tested on held-out texts at every test noise level γ on the token embeddings: accuracy, the loss of
every layer's readout, and the share of layers that fail to descend. A unit is one method for one seed.

Modules: ``config``, ``data`` (one seed's split, tokenised per model), ``unit`` (build, train, evaluate,
save), ``aggregate`` (``results.json``), ``report``.
"""

from __future__ import annotations

from typing import Any

import torch

from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.registry import register_family
from unrolled.experiments.text import report as _report
from unrolled.experiments.text.aggregate import aggregate
from unrolled.experiments.text.config import HFEncoderMethod, HFTrainConfig, TextExperiment, UTTextMethod
from unrolled.extras import Requirement

_LAZY = {  # the hf extra: imported on first use, so configs load and list without it
    "TextSeedData": "unrolled.experiments.text.data",
    "build": "unrolled.experiments.text.unit",
    "evaluate": "unrolled.experiments.text.unit",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HFEncoderMethod",
    "HFTrainConfig",
    "TextExperiment",
    "TextFamily",
    "TextSeedData",
    "UTTextMethod",
    "aggregate",
    "build",
    "evaluate",
]


class TextFamily(ExperimentFamily):
    """Units: a method (model × objective) × seed; each fine-tunes, saves its model, sweeps the test γ grid."""

    kind = "text"
    config_class = TextExperiment
    title = "text classification"

    def plan(self, cfg: TextExperiment) -> list[Unit]:
        units = []
        for seed in cfg.seeds:
            for m in cfg.methods:
                size = 10.0 if m.kind == "hf_encoder" else 1.0  # pretrained encoders cost about 10x the UT
                units.append(Unit(m.name, seed, None, m, steps=cfg.train.steps, cost=cfg.train.steps * size))
        return units

    def requirements(self, cfg: TextExperiment) -> list[Requirement]:
        return [Requirement("transformers", "text classification (the Hugging Face Trainer and tokenizers)")]

    def seed_data(self, cfg: TextExperiment, seed: int, dtype: torch.dtype, device: str) -> Any:
        from unrolled.experiments.text.data import TextSeedData

        return TextSeedData(cfg.task, seed)

    def run_unit(self, unit: Unit, data: Any, ctx: UnitContext) -> dict[str, Any]:
        from unrolled.experiments.text.unit import run_unit

        return run_unit(unit, data, ctx)

    aggregate = staticmethod(aggregate)
    report = staticmethod(_report.report)
    summary = staticmethod(_report.summary)
    overlay_plot = staticmethod(_report.plot_accuracy)


register_family(TextFamily())
