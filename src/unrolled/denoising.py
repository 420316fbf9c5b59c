"""The video-denoising experiment (Porras-Valenzuela, Hadou & Ribeiro, arXiv 2601.17257, Sec. 5.1).

A denoiser sees x̃ = x + ε, ε ~ N(μ, (γσ)²) (σ: the training clips' pixel standard deviation) and is trained
at one noise level (``perturbation.train_gamma``), with ERM on its last layer or under layerwise descent
constraints. It is then evaluated on held-out *videos* (the split is by source video) at every test noise
level γ: the RMSE of its output on the 0–255 pixel scale, the layerwise losses of its trajectory, and the
share of layers that fail to descend.

A unit of work is one method (backbone × objective) for one seed. This module supplies the unit runner, the
aggregation and the report for :class:`unrolled.experiment.ExperimentRunner`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unrolled.config import DenoiserMethod, ExperimentConfig, VideoDataConfig
from unrolled.constrained import Objective
from unrolled.constrained.descent import violation_share
from unrolled.constrained.objective import objective_from_config
from unrolled.models.denoisers import VideoDenoiser, clip_mse
from unrolled.perturb import EmbeddingNoise, Perturbation
from unrolled.seeding import derive_seed, generator
from unrolled.tasks.video import ClipDataset, VideoSplit, _source_weights, split_by_video
from unrolled.train.loop import rank_and_world, shard, train


def rmse_255(prediction: Tensor, clean: Tensor) -> float:
    """Root mean squared error on the 0–255 pixel scale, the output clamped to the valid range [0, 1]."""
    return 255.0 * math.sqrt(float(((prediction.clamp(0, 1) - clean) ** 2).mean()))


class ClipStream:
    """Noisy/clean clip batches from a :class:`ClipDataset`, epoch by epoch, resumable.

    Every epoch visits the clips in a fresh random order (from ``generator``) and the dataset draws new crops
    (``set_epoch``). Noise is drawn for the whole global batch, so under DDP each rank's shard is exactly its
    part of what one process would see.
    """

    def __init__(
        self, dataset: ClipDataset, batch_size: int, noise: Perturbation, generator: torch.Generator
    ) -> None:
        if batch_size > len(dataset):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(dataset)} training clips per epoch")
        self.dataset, self.batch_size, self.noise, self.generator = dataset, batch_size, noise, generator
        self.rank, self.world = rank_and_world()
        self._part = shard(batch_size, self.rank, self.world)
        self.epoch, self.position = 0, 0
        self.order: Tensor | None = None

    def next(self) -> tuple[Tensor, Tensor]:
        if self.order is None or self.position + self.batch_size > len(self.order):
            if self.order is not None:
                self.epoch += 1
            self.dataset.set_epoch(self.epoch)
            self.order = torch.randperm(len(self.dataset), generator=self.generator)
            self.position = 0
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        clean = torch.stack([self.dataset[int(i)] for i in idx])
        noisy = self.noise.apply(clean, self.generator)
        return noisy[self._part], clean[self._part]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "position": self.position,
                "order": self.order}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position, self.order = int(state["epoch"]), int(state["position"]), state["order"]
        self.dataset.set_epoch(self.epoch)


def stack_clips(dataset: ClipDataset, count: int | None = None) -> Tensor:
    """The first ``count`` clips of a dataset as one tensor ``[N, T, C, S, S]``."""
    n = len(dataset) if count is None else min(count, len(dataset))
    return torch.stack([dataset[i] for i in range(n)])


@lru_cache(maxsize=4)
def load_split(task: VideoDataConfig, seed: int) -> VideoSplit:
    """:func:`split_by_video`, decoded once per process and (config, seed)."""
    return split_by_video(task, seed)


class DenoisingData:
    """Everything one seed needs: the split, σ, the test clips, and a held-out constraint batch."""

    def __init__(self, cfg: ExperimentConfig, seed: int) -> None:
        assert isinstance(cfg.task, VideoDataConfig)
        self.seed = seed
        self.split = load_split(cfg.task, seed)
        self.split.train.set_epoch(0)  # the cached dataset may have moved on in an earlier unit
        sample = stack_clips(self.split.train, 512)
        self.sigma = float(sample.std())  # the data's pixel std: the unit of the noise level γ
        self.test = stack_clips(self.split.test)

    def noise(self, cfg: ExperimentConfig, gamma: float) -> Perturbation:
        """Noise at level γ: σ is the data's pixel std for inputs, the batch's own std for embeddings."""
        p = cfg.perturbation
        return Perturbation(p.kind, gamma, p.mean, self.sigma if p.target == "input" else None)

    def heldout(self, cfg: ExperimentConfig, size: int) -> tuple[Tensor, Tensor]:
        """A held-out constraint batch: fresh clips of the training videos, noised at the training level."""
        assert isinstance(cfg.task, VideoDataConfig)
        report = self.split.train_report
        dataset = ClipDataset(
            report, cfg.task.frames, cfg.task.crop, size, derive_seed(self.seed, "constraint"),
            weights=_source_weights(report),
        )  # fmt: skip
        clean = stack_clips(dataset)
        noisy = self.noise(cfg, cfg.perturbation.train_gamma).apply(
            clean, generator(self.seed, "constraint-noise")
        )
        return noisy, clean


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


def denoising_objective(
    method: DenoiserMethod, cfg: ExperimentConfig, data: DenoisingData
) -> tuple[Objective, Callable[[torch.nn.Module], Tensor] | None]:
    """ERM on the last layer, or the constrained objective (with its held-out slack function)."""
    return objective_from_config(
        method.constraints, method.depth, clip_mse, lambda size: data.heldout(cfg, size)
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


def run_denoising_unit(
    runner: Any, unit: Any, data: DenoisingData, advance: Callable[[int], object]
) -> dict[str, Any]:
    """Train one denoiser for one seed and evaluate it over the test noise grid."""
    cfg: ExperimentConfig = runner.cfg
    method: DenoiserMethod = unit.method
    assert isinstance(cfg.task, VideoDataConfig)
    t0 = time.perf_counter()
    model = build_denoiser(method, cfg.task, generator(unit.seed, method.name, "init"))
    stream = ClipStream(
        data.split.train, cfg.train.batch_size, data.noise(cfg, cfg.perturbation.train_gamma),
        generator(unit.seed, "train"),
    )  # fmt: skip
    objective, heldout = denoising_objective(method, cfg, data)
    metrics_path = Path(runner.out) / "metrics.jsonl"

    def on_log(rec: dict[str, Any]) -> None:
        with metrics_path.open("a") as f:  # one write per line: safe to share between workers
            f.write(json.dumps({"method": method.name, "seed": unit.seed, "depth": None, **rec}) + "\n")

    def on_step(step: int) -> None:
        advance(1)
        if runner.on_step is not None:
            runner.on_step(unit, step)

    ckpt = runner.checkpoint_path(unit)
    if ckpt.exists():
        from unrolled.train.checkpoint import load_checkpoint

        advance(int(load_checkpoint(ckpt)["step"]))
    result = train(
        model, stream, cfg.train, objective=objective, checkpoint=ckpt, heldout_slack=heldout,
        on_log=on_log, on_step=on_step, where=f"method {method.name}, seed {unit.seed}",
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


def aggregate_denoising(cfg: ExperimentConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: RMSE per γ (mean ± std over seeds), layerwise MSE per γ, violation share, multipliers."""
    gammas = [str(g) for g in cfg.perturbation.test_gammas]
    out: dict[str, Any] = {
        "name": cfg.name,
        "description": cfg.description,
        "task": "video denoising",
        "gammas": [float(g) for g in gammas],
        "train_gamma": cfg.perturbation.train_gamma,
        "seeds": list(cfg.seeds),
        "methods": {},
        "published": {k: list(v) for k, v in (cfg.published or {}).items()},
        "published_gammas": list(cfg.published_gammas or []),
        "published_source": cfg.published_source,
        "skipped_files": sorted({tuple(f) for r in records for f in r.get("skipped_files", [])}),
    }
    for m in cfg.methods:
        recs = [r for r in records if r["method"] == m.name]
        rmse = torch.tensor([[r["eval"][g]["rmse"] for g in gammas] for r in recs], dtype=torch.float64)
        std = rmse.std(0, unbiased=True) if len(recs) > 1 else torch.zeros(len(gammas), dtype=torch.float64)
        layer = {
            g: torch.tensor([r["eval"][g]["layer_mse"] for r in recs], dtype=torch.float64).mean(0).tolist()
            for g in gammas
        }
        viol = {g: sum(r["eval"][g]["violation_share"] for r in recs) / len(recs) for g in gammas}
        entry: dict[str, Any] = {
            "kind": m.kind,
            "label": m.label or m.name,
            "constrained": m.constraints is not None,  # type: ignore[union-attr]
            "alpha": m.constraints.alpha if m.constraints is not None else None,  # type: ignore[union-attr]
            "rmse_mean": rmse.mean(0).tolist(),
            "rmse_std": std.tolist(),
            "rmse_per_seed": rmse.tolist(),
            "layer_mse_mean": layer,
            "violation_share": viol,
            "parameters": recs[0]["parameters"],
        }
        if "multipliers" in recs[0]:
            entry["multipliers_per_seed"] = [r["multipliers"] for r in recs]
        out["methods"][m.name] = entry
    return out
