"""The data of one seed of a video-denoising experiment: training clip stream, test clips, σ, held-out batches."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from unrolled.experiments.denoising.config import DenoisingExperiment
from unrolled.perturb import Perturbation
from unrolled.seeding import derive_seed, generator
from unrolled.tasks.video import ClipDataset, VideoDataConfig, VideoSplit, source_weights, split_by_video
from unrolled.train.loop import rank_and_world, shard


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

    def __init__(self, cfg: DenoisingExperiment, seed: int) -> None:
        self.seed = seed
        self.split = load_split(cfg.task, seed)
        self.split.train.set_epoch(0)  # the cached dataset may have moved on in an earlier unit
        sample = stack_clips(self.split.train, 512)
        self.sigma = float(sample.std())  # the data's pixel std: the unit of the noise level γ
        self.test = stack_clips(self.split.test)

    def noise(self, cfg: DenoisingExperiment, gamma: float) -> Perturbation:
        """Noise at level γ: σ is the data's pixel std for inputs, the batch's own std for embeddings."""
        p = cfg.perturbation
        return Perturbation(p.kind, gamma, p.mean, self.sigma if p.target == "input" else None)

    def heldout(
        self, cfg: DenoisingExperiment, size: int, gamma: float | None = None
    ) -> tuple[Tensor, Tensor]:
        """A held-out constraint batch: fresh clips of the training videos, noised at the training level
        (``gamma``: a method's own training level, default the experiment's)."""
        clean = self.training_video_clips(cfg, size, "constraint")
        level = cfg.perturbation.train_gamma if gamma is None else gamma
        noisy = self.noise(cfg, level).apply(clean, generator(self.seed, "constraint-noise"))
        return noisy, clean

    def training_video_clips(self, cfg: DenoisingExperiment, size: int, purpose: str) -> Tensor:
        """``size`` fresh clips ``[size, T, C, S, S]`` of the training videos (never the test videos), drawn
        with a seed of their own per ``purpose`` (a constraint batch, validation clips)."""
        report = self.split.train_report
        dataset = ClipDataset(
            report, cfg.task.frames, cfg.task.crop, size, derive_seed(self.seed, purpose),
            weights=source_weights(report),
        )  # fmt: skip
        return stack_clips(dataset)
