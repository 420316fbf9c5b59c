"""The classical reference of a video-denoising experiment: TV denoising, its weight chosen per γ on validation.

One unit per seed (``tv/seed<k>``): for every test γ, the TV weight with the lowest RMSE on fresh clips of the
*training* videos noised at γ (:func:`~unrolled.solvers.tv.choose_weight`), then that weight on exactly the
noisy test clips the learned denoisers see (the same seeded noise, chunk by chunk).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

from torch import Tensor

from unrolled.experiments.denoising.config import DenoisingExperiment, TVReference
from unrolled.experiments.denoising.data import DenoisingData
from unrolled.experiments.family import Unit, UnitContext
from unrolled.perturb import Perturbation
from unrolled.seeding import generator
from unrolled.solvers.tv import choose_weight, tv_denoise

NAME = "tv"
LABEL = "TV (scikit-image, weight tuned per γ)"


def noisy_test_chunks(
    clean: Tensor, noise: Perturbation, gamma: float, seed: int, chunk: int = 64
) -> Iterator[tuple[Tensor, Tensor]]:
    """(noisy, clean) test chunks at level γ: the noise every method of a seed sees at that level."""
    g = generator(seed, "test-noise", gamma)
    for start in range(0, clean.shape[0], chunk):
        x = clean[start : start + chunk]
        yield noise.with_gamma(gamma).apply(x, g), x


def run_tv_unit(unit: Unit, data: DenoisingData, ctx: UnitContext) -> dict[str, Any]:
    """Choose TV's weight per test γ on validation clips of the training videos, then score it on the test clips."""
    cfg: DenoisingExperiment = ctx.cfg  # type: ignore[assignment]
    spec: TVReference = unit.spec
    t0 = time.perf_counter()
    val_clean = data.training_video_clips(cfg, spec.validation_clips, "tv-validation")
    noise = data.noise(cfg, 0.0)
    out: dict[str, dict[str, Any]] = {}
    for gamma in cfg.perturbation.test_gammas:
        val_noisy = noise.with_gamma(gamma).apply(
            val_clean, generator(unit.seed, "tv-validation-noise", gamma)
        )
        weight, scores = choose_weight(val_noisy, val_clean, spec.weights)
        sq_err = 0.0
        for noisy, clean in noisy_test_chunks(data.test, noise, gamma, unit.seed):
            sq_err += float(((tv_denoise(noisy, weight).clamp(0, 1) - clean) ** 2).sum())
        out[str(gamma)] = {
            "rmse": 255.0 * math.sqrt(sq_err / data.test.numel()),
            "weight": weight,
            "validation_rmse": {str(w): v for w, v in scores.items()},
        }
        ctx.advance(1)
    return {
        "method": NAME,
        "seed": unit.seed,
        "depth": None,
        "eval": out,
        "seconds": time.perf_counter() - t0,
    }
