"""The prompts of one seed (test splits, validation, probe-fitting) and the training stream with its curriculum."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unrolled.experiments.icl.config import ICLExperiment
from unrolled.models.icl import Prompts
from unrolled.seeding import generator
from unrolled.tasks.regression import RegressionTask
from unrolled.train.config import TrainConfig
from unrolled.train.loop import rank_and_world, shard


class PromptStream:
    """Fresh training prompts every step, following Garg et al.'s curriculum; resumable.

    Step t (1-based) draws ``batch_size`` prompts of ``points(t)`` pairs whose x has ``dims(t)`` active
    coordinates (the rest zero). Under DDP every rank draws the same global batch and keeps its shard.
    """

    def __init__(
        self,
        cfg: ICLExperiment,
        task: RegressionTask,
        train: TrainConfig,
        gen: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.curriculum = cfg.task.curriculum
        self.points, self.d = cfg.task.points, cfg.task.d
        self.task, self.train, self.generator, self.dtype, self.device = task, train, gen, dtype, device
        rank, world = rank_and_world()
        self._slice = shard(train.batch_size, rank, world)
        self.world = world
        self.drawn = 0

    def shape_at(self, step: int) -> tuple[int, int]:
        """(pairs per prompt, active dimensions) at optimizer step ``step``."""
        c = self.curriculum
        points = c.points.at(step) if c.points is not None else self.points
        dims = c.dims.at(step) if c.dims is not None else self.d
        return points, dims

    def next(self) -> tuple[Prompts, Tensor]:
        self.drawn += 1
        points, dims = self.shape_at(self.drawn)
        batch = self.task.sample(
            self.train.batch_size,
            self.generator,
            self.dtype,
            self.device,
            n=points - 1,
            active_dims=dims if dims < self.d else None,
        )
        prompts = Prompts.from_batch(batch)
        if self.world > 1:
            prompts = prompts[self._slice]
        return prompts, prompts.ys

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.drawn = int(state["drawn"])


class SeedData:
    """The prompts of one seed, drawn once and shared by every unit of that seed.

    Attributes:
        task: the training distribution (its seed fixes any rotation).
        splits: ``test`` and ``shift:<kind>=<size>`` test prompts (``eval.prompts`` each).
        validation: prompts of the training distribution for tuning the baselines.
        probe: prompts of the training distribution for fitting the layer probes.
        curve: held-out prompts of the training distribution for the learning curve (``eval.curve_every``).
        tasks: every split's distribution (the Bayes predictor needs its prior and noise).
    """

    def __init__(self, cfg: ICLExperiment, seed: int, dtype: torch.dtype, device: str) -> None:
        self.seed = seed
        self.task = RegressionTask(cfg.task.regression(), seed)
        self.tasks: dict[str, RegressionTask] = {}
        self.splits: dict[str, Prompts] = {}
        for name, (regression, points) in cfg.splits().items():
            task = RegressionTask(regression, seed)
            self.tasks[name] = task
            batch = task.sample(cfg.eval.prompts, generator(seed, "icl", name), dtype, device, n=points - 1)
            self.splits[name] = Prompts.from_batch(batch)
        self.validation = self._draw(cfg.eval.validation, "validation", dtype, device)
        reading = cfg.eval.reading
        self.probe = self._draw(reading.probe_prompts, "probe", dtype, device) if reading else None
        self.curve = (
            self._draw(cfg.eval.curve_prompts, "curve", dtype, device) if cfg.eval.curve_every else None
        )

    def _draw(self, size: int, tag: str, dtype: torch.dtype, device: str) -> Prompts:
        return Prompts.from_batch(self.task.sample(size, generator(self.seed, "icl", tag), dtype, device))
