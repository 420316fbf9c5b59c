"""The classical reference of a video-denoising experiment: TV denoising, its weight chosen per γ on validation.

One unit per seed (``tv/seed<k>``): for every test γ, the TV weight with the lowest RMSE on fresh clips of the
*training* videos noised at γ (:func:`~unrolled.solvers.tv.choose_weight`), then that weight on exactly the
noisy test clips the learned denoisers see (the same seeded noise, chunk by chunk). That row knows the noise
level; a second, *blind* row uses at every γ the weight chosen at the training γ, as a learned denoiser
trained at one level must.
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
LABELS = {
    "rmse": "TV, weight tuned per test γ (knows the noise level)",
    "rmse_blind": "TV, weight tuned at the training γ (blind, as the learned models)",
}


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

    choices: dict[float, tuple[float, dict[float, float]]] = {}

    def validation_choice(gamma: float) -> tuple[float, dict[float, float]]:
        """The weight for level γ, chosen once (the training γ is usually also a test γ)."""
        if gamma not in choices:
            g = generator(unit.seed, "tv-validation-noise", gamma)
            choices[gamma] = choose_weight(
                noise.with_gamma(gamma).apply(val_clean, g), val_clean, spec.weights
            )
        return choices[gamma]

    blind_weight, _ = validation_choice(cfg.perturbation.train_gamma)
    out: dict[str, dict[str, Any]] = {}
    for gamma in cfg.perturbation.test_gammas:
        weight, scores = validation_choice(gamma)
        sq_err = {weight: 0.0, blind_weight: 0.0}
        for noisy, clean in noisy_test_chunks(data.test, noise, gamma, unit.seed):
            for w in sq_err:
                sq_err[w] += float(((tv_denoise(noisy, w).clamp(0, 1) - clean) ** 2).sum())
        out[str(gamma)] = {
            "rmse": 255.0 * math.sqrt(sq_err[weight] / data.test.numel()),
            "rmse_blind": 255.0 * math.sqrt(sq_err[blind_weight] / data.test.numel()),
            "weight": weight,
            "blind_weight": blind_weight,
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
