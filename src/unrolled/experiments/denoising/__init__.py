"""Video denoising (Porras-Valenzuela, Hadou & Ribeiro, arXiv 2601.17257, Sec. 5.1) (``task.kind: video``).

A denoiser sees x̃ = x + ε, ε ~ N(μ, (γσ)²) (σ: the training clips' pixel standard deviation) and is trained
at one noise level (``perturbation.train_gamma``), with ERM on its last layer or under layerwise descent
constraints. It is then evaluated on held-out *videos* (the split is by source video) at every test noise
level γ: the RMSE of its output on the 0–255 pixel scale, the layerwise losses of its trajectory, and the
share of layers that fail to descend. A unit of work is one method (backbone × objective) for one seed.

Modules: ``config``, ``data`` (clip stream, one seed's split and test clips), ``unit`` (build, train,
evaluate), ``reference`` (TV denoising, one unit per seed), ``aggregate`` (``results.json``), ``report``
(with ``robustness``: the constrained − ERM gaps of a robustness study).
"""

from __future__ import annotations

from typing import Any

import torch

from unrolled.experiments.denoising import report as _report
from unrolled.experiments.denoising.aggregate import aggregate
from unrolled.experiments.denoising.config import DenoiserMethod, DenoisingExperiment, TVReference
from unrolled.experiments.denoising.data import ClipStream, DenoisingData, load_split, stack_clips
from unrolled.experiments.denoising.reference import NAME as TV_NAME
from unrolled.experiments.denoising.reference import run_tv_unit
from unrolled.experiments.denoising.unit import build_denoiser, evaluate_denoiser, run_unit
from unrolled.experiments.family import ExperimentFamily, Unit, UnitContext
from unrolled.experiments.registry import register_family
from unrolled.extras import Requirement
from unrolled.solvers.tv import rmse_255

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

    def requirements(self, cfg: DenoisingExperiment) -> list[Requirement]:
        sources = [*cfg.task.train_sources, *cfg.task.test_sources]
        out = []
        if any(not str(s).startswith("moving_mnist") for s in sources):
            out.append(Requirement("av", "decoding videos (every source but moving_mnist)"))
        if cfg.tv_reference is not None and cfg.perturbation.target == "input":
            out.append(Requirement("skimage", "the TV reference (tv_reference: null turns it off)"))
        return out

    def plan(self, cfg: DenoisingExperiment) -> list[Unit]:
        units = []
        for seed in cfg.seeds:
            for m in cfg.methods:
                steps = m.steps or cfg.train.steps
                units.append(Unit(m.name, seed, None, m, steps=steps, cost=float(steps * m.depth)))
            if cfg.tv_reference is not None and cfg.perturbation.target == "input":
                gammas = len(cfg.perturbation.test_gammas)
                units.append(Unit(TV_NAME, seed, None, cfg.tv_reference, steps=gammas, cost=2.0 * gammas))
        return units

    def seed_data(
        self, cfg: DenoisingExperiment, seed: int, dtype: torch.dtype, device: str
    ) -> DenoisingData:
        return DenoisingData(cfg, seed)

    @staticmethod
    def run_unit(unit: Unit, data: DenoisingData, ctx: UnitContext) -> dict[str, Any]:
        if isinstance(unit.spec, TVReference):
            return run_tv_unit(unit, data, ctx)
        return run_unit(unit, data, ctx)

    aggregate = staticmethod(aggregate)
    report = staticmethod(_report.report)
    summary = staticmethod(_report.summary)
    overlay_plot = staticmethod(_report.plot_rmse_vs_gamma)


register_family(DenoisingFamily())
