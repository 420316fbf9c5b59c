"""Video denoising (Porras-Valenzuela, Hadou & Ribeiro, arXiv 2601.17257, Sec. 5.1) (``task.kind: video``).

A denoiser sees x̃ = x + ε, ε ~ N(μ, (γσ)²) (σ: the training clips' pixel standard deviation) and is trained
at one noise level (``perturbation.train_gamma``), with ERM on its last layer or under layerwise descent
constraints. It is then evaluated on held-out *videos* (the split is by source video) at every test noise
level γ: the RMSE of its output on the 0–255 pixel scale, the layerwise losses of its trajectory, and the
share of layers that fail to descend. A unit of work is one method (backbone × objective) for one seed.

Modules: ``config``, ``data`` (clip stream, one seed's split and test clips), ``unit`` (build, train,
evaluate), ``aggregate`` (``results.json``), ``report``.
"""

from __future__ import annotations

import torch

from unrolled.experiments.denoising import report as _report
from unrolled.experiments.denoising.aggregate import aggregate
from unrolled.experiments.denoising.config import DenoiserMethod, DenoisingExperiment
from unrolled.experiments.denoising.data import ClipStream, DenoisingData, load_split, stack_clips
from unrolled.experiments.denoising.unit import build_denoiser, evaluate_denoiser, rmse_255, run_unit
from unrolled.experiments.family import ExperimentFamily, Unit
from unrolled.experiments.registry import register_family

__all__ = [
    "ClipStream",
    "DenoiserMethod",
    "DenoisingData",
    "DenoisingExperiment",
    "DenoisingFamily",
    "aggregate",
    "build_denoiser",
    "evaluate_denoiser",
    "load_split",
    "rmse_255",
    "stack_clips",
]


class DenoisingFamily(ExperimentFamily):
    """Units: a denoiser (backbone × objective) × seed; each trains, then sweeps the test γ grid."""

    kind = "video"
    config_class = DenoisingExperiment
    title = "video denoising"

    def plan(self, cfg: DenoisingExperiment) -> list[Unit]:
        return [
            Unit(m.name, seed, None, m, steps=cfg.train.steps, cost=float(cfg.train.steps * m.depth))
            for seed in cfg.seeds
            for m in cfg.methods
        ]

    def seed_data(
        self, cfg: DenoisingExperiment, seed: int, dtype: torch.dtype, device: str
    ) -> DenoisingData:
        return DenoisingData(cfg, seed)

    run_unit = staticmethod(run_unit)
    aggregate = staticmethod(aggregate)
    report = staticmethod(_report.report)
    summary = staticmethod(_report.summary)
    overlay_plot = staticmethod(_report.plot_rmse_vs_gamma)


register_family(DenoisingFamily())
