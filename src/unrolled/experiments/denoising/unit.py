"""One unit of a video-denoising experiment: build a denoiser, train it, and sweep the test noise grid."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unrolled.constrained.descent import violation_share
from unrolled.constrained.factory import objective_from_config
from unrolled.experiments.denoising.config import DenoiserMethod, DenoisingExperiment
from unrolled.experiments.denoising.data import ClipStream, DenoisingData
from unrolled.experiments.denoising.reference import noisy_test_chunks
from unrolled.experiments.family import Unit, UnitContext
from unrolled.models.denoisers import VideoDenoiser, clip_mse
from unrolled.models.dust import DUSTDenoiser
from unrolled.perturb import EmbeddingNoise, LayerNoise, Perturbation
from unrolled.seeding import generator
from unrolled.tasks.video import VideoDataConfig
from unrolled.train.loop import train

Denoiser = VideoDenoiser | DUSTDenoiser


def build_denoiser(method: DenoiserMethod, task: VideoDataConfig, generator: torch.Generator) -> Denoiser:
    """The :class:`VideoDenoiser` (UT, ViT) or :class:`DUSTDenoiser` a config entry describes."""
    channels = 1 if task.grayscale else 3
    if method.kind == "dust":
        return DUSTDenoiser(
            task.frames, channels, task.crop, task.crop, method.patch, codes=method.width,  # type: ignore[arg-type]
            depth=method.depth, heads=method.heads, attention=method.attention, threshold=method.threshold,
            generator=generator,
        )  # fmt: skip
    return VideoDenoiser(
        method.kind,  # type: ignore[arg-type]
        frames=task.frames,
        channels=channels,
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
    model: Denoiser,
    clean: Tensor,
    noise: Perturbation,
    gammas: Sequence[float],
    seed: int,
    chunk: int = 64,
    target: str = "input",
) -> dict[str, dict[str, Any]]:
    """Per test noise level γ: RMSE (0–255) of the last layer, layerwise MSE, and the share of ascending layers.

    Evaluation runs in eval mode, so training-only noise (embedding or intermediate-layer) is off. ``target``
    says what the noise perturbs: the input clip, or the patch embedding Φ_0 (through an
    :class:`~unrolled.perturb.EmbeddingNoise` hook active in evaluation). The noise at each γ is drawn from its
    own seeded generator, so every method sees the same noisy clips.
    """
    out: dict[str, dict[str, Any]] = {}
    model.eval()
    with torch.no_grad():
        for gamma in gammas:
            sq_err, layer_sums, count = 0.0, None, 0
            if target == "embedding":
                g = generator(seed, "test-noise", gamma)
                hook = EmbeddingNoise(model.embed, noise.with_gamma(gamma), "test", g)  # type: ignore[union-attr]
                chunks = ((x, x) for x in clean.split(chunk))
            else:
                hook, chunks = None, noisy_test_chunks(clean, noise, gamma, seed, chunk)
            for inputs, x in chunks:
                trajectory = model(inputs)
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


def method_train_gamma(cfg: DenoisingExperiment, method: DenoiserMethod) -> float:
    """The noise level a method trains at: its own ``train_gamma``, else the experiment's."""
    return cfg.perturbation.train_gamma if method.train_gamma is None else method.train_gamma


def run_unit(unit: Unit, data: DenoisingData, ctx: UnitContext) -> dict[str, Any]:
    """Train one denoiser for one seed (ERM or constrained) and evaluate it over the test noise grid."""
    cfg: DenoisingExperiment = ctx.cfg  # type: ignore[assignment]
    method: DenoiserMethod = unit.spec
    t0 = time.perf_counter()
    model = build_denoiser(method, cfg.task, generator(unit.seed, method.name, "init"))
    train_gamma = method_train_gamma(cfg, method)
    stream = ClipStream(
        data.split.train, cfg.train.batch_size, data.noise(cfg, train_gamma), generator(unit.seed, "train")
    )
    objective, heldout = objective_from_config(
        method.constraints,
        method.depth,
        None,
        lambda size: data.heldout(cfg, size, train_gamma),
        generator(unit.seed, method.name, "readout-subsets"),
        total_steps=cfg.train.steps if method.steps is None else method.steps,
        where=f"method {method.name}, seed {unit.seed}",
    )  # None: the denoiser's own loss (its clip MSE), so the intermediate readouts go in Gram form
    train_cfg = cfg.train if method.steps is None else cfg.train.model_copy(update={"steps": method.steps})
    noise = None
    if method.layer_noise is not None:
        g = generator(unit.seed, method.name, "layer-noise")
        noise = LayerNoise(model.layers, method.layer_noise.scale, method.layer_noise.decay, g)
    try:
        result = train(
            model, stream, train_cfg, objective=objective, checkpoint=ctx.checkpoint, heldout_slack=heldout,
            on_log=ctx.log_metrics, on_step=ctx.on_step, where=f"method {method.name}, seed {unit.seed}",
            log_dir=ctx.log_dir,
        )  # fmt: skip
    finally:
        if noise is not None:
            noise.remove()
    record: dict[str, Any] = {
        "method": method.name,
        "seed": unit.seed,
        "depth": None,
        "layers": method.depth,
        "final_train_loss": result.final_loss if math.isfinite(result.final_loss) else None,
        "steps": result.steps,
        "train_seconds": result.seconds,  # of this call (a resumed unit's covers the steps after the resume)
        "resumed_from": result.resumed_from,
        "train_gamma": train_gamma,
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
    record["objective"] = objective.report()
    record["seconds"] = time.perf_counter() - t0
    return record
