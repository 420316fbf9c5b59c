"""One unit of a video-denoising experiment: build a denoiser, train it, and sweep the test noise grid."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unrolled.constrained.descent import violation_share
from unrolled.constrained.objective import objective_from_config
from unrolled.experiments.denoising.config import DenoiserMethod, DenoisingExperiment
from unrolled.experiments.denoising.data import ClipStream, DenoisingData
from unrolled.experiments.family import Unit, UnitContext
from unrolled.models.denoisers import VideoDenoiser, clip_mse
from unrolled.perturb import EmbeddingNoise, Perturbation
from unrolled.seeding import generator
from unrolled.tasks.video import VideoDataConfig
from unrolled.train.loop import train


def rmse_255(prediction: Tensor, clean: Tensor) -> float:
    """Root mean squared error on the 0–255 pixel scale, the output clamped to the valid range [0, 1]."""
    return 255.0 * math.sqrt(float(((prediction.clamp(0, 1) - clean) ** 2).mean()))


def build_denoiser(
    method: DenoiserMethod, task: VideoDataConfig, generator: torch.Generator
) -> VideoDenoiser:
    """The :class:`VideoDenoiser` a config entry describes."""
    return VideoDenoiser(
        method.kind,  # type: ignore[arg-type]
        frames=task.frames,
        channels=1 if task.grayscale else 3,
        height=task.crop,
        width=task.crop,
        patch=method.patch,
        width_D=method.width,
        depth=method.depth,
        heads=method.heads,
        activation=method.activation,
        norm=method.norm,
        init=method.init,
        init_std=method.init_std,
        mlp_ratio=method.mlp_ratio,
        dropout=method.dropout,
        generator=generator,
    )


def evaluate_denoiser(
    model: VideoDenoiser,
    clean: Tensor,
    noise: Perturbation,
    gammas: Sequence[float],
    seed: int,
    chunk: int = 64,
    target: str = "input",
) -> dict[str, dict[str, Any]]:
    """Per test noise level γ: RMSE (0–255) of the last layer, layerwise MSE, and the share of ascending layers.

    ``target`` says what the noise perturbs: the input clip, or the patch embedding Φ_0 (through an
    :class:`~unrolled.perturb.EmbeddingNoise` hook active in evaluation). The noise at each γ is drawn from its
    own seeded generator, so every method sees the same noisy clips.
    """
    out: dict[str, dict[str, Any]] = {}
    model.eval()
    with torch.no_grad():
        for gamma in gammas:
            g = generator(seed, "test-noise", gamma)
            sq_err, layer_sums, count = 0.0, None, 0
            hook = (
                EmbeddingNoise(model.embed, noise.with_gamma(gamma), "test", g)
                if target == "embedding"
                else None
            )
            for start in range(0, clean.shape[0], chunk):
                x = clean[start : start + chunk]
                trajectory = model(x if hook is not None else noise.with_gamma(gamma).apply(x, g))
                sq_err += float(((trajectory.prediction().clamp(0, 1) - x) ** 2).sum())
                losses = trajectory.layerwise_losses(x, clip_mse, reduction="none").sum(dim=1)
                layer_sums = losses if layer_sums is None else layer_sums + losses
                count += x.shape[0]
            if hook is not None:
                hook.remove()
            assert layer_sums is not None
            layer_mse = layer_sums / count
            out[str(gamma)] = {
                "rmse": 255.0 * math.sqrt(sq_err / clean.numel()),
                "layer_mse": [float(v) for v in layer_mse],
                "violation_share": violation_share(layer_mse),
            }
    return out


def run_unit(unit: Unit, data: DenoisingData, ctx: UnitContext) -> dict[str, Any]:
    """Train one denoiser for one seed (ERM or constrained) and evaluate it over the test noise grid."""
    cfg: DenoisingExperiment = ctx.cfg  # type: ignore[assignment]
    method: DenoiserMethod = unit.spec
    t0 = time.perf_counter()
    model = build_denoiser(method, cfg.task, generator(unit.seed, method.name, "init"))
    stream = ClipStream(
        data.split.train, cfg.train.batch_size, data.noise(cfg, cfg.perturbation.train_gamma),
        generator(unit.seed, "train"),
    )  # fmt: skip
    objective, heldout = objective_from_config(
        method.constraints, method.depth, clip_mse, lambda size: data.heldout(cfg, size)
    )
    result = train(
        model, stream, cfg.train, objective=objective, checkpoint=ctx.checkpoint, heldout_slack=heldout,
        on_log=ctx.log_metrics, on_step=ctx.on_step, where=f"method {method.name}, seed {unit.seed}",
    )  # fmt: skip
    record: dict[str, Any] = {
        "method": method.name,
        "seed": unit.seed,
        "depth": None,
        "layers": method.depth,
        "final_train_loss": result.final_loss if math.isfinite(result.final_loss) else None,
        "steps": result.steps,
        "sigma": data.sigma,
        "parameters": sum(p.numel() for p in model.parameters()),
        "eval": evaluate_denoiser(
            model,
            data.test,
            data.noise(cfg, 0.0),
            cfg.perturbation.test_gammas,
            unit.seed,
            target=cfg.perturbation.target,
        ),
        "skipped_files": [
            [str(path), reason]
            for report in (data.split.train_report, data.split.test_report)
            for path, reason in report.skipped
        ],
    }
    if objective.constrained:
        record["multipliers"] = [float(v) for v in objective.multipliers.value]  # type: ignore[attr-defined]
    record["seconds"] = time.perf_counter() - t0
    return record
