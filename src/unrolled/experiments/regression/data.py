"""The prompts of one seed: held-out test, validation, the fixed training batch, and shifted test sets.

Every seed has its own task (its own rotation U), its own held-out test prompts (shared by all methods),
validation prompts (for tuning classical step sizes), and training stream.
"""

from __future__ import annotations

import torch

from unrolled.experiments.regression.config import RegressionExperiment
from unrolled.seeding import generator
from unrolled.tasks.regression import RegressionBatch, RegressionTask


class SeedData:
    """The prompts of one seed, drawn once and shared by every unit of that seed."""

    def __init__(self, cfg: RegressionExperiment, seed: int, dtype: torch.dtype, device: str) -> None:
        self.seed = seed
        self.task = RegressionTask(cfg.task, seed)
        self.test = self.task.sample(cfg.eval.batch_size, generator(seed, "test"), dtype, device)
        self.validation = self.task.sample(
            cfg.eval.validation_size, generator(seed, "validation"), dtype, device
        )
        self.train_batch: RegressionBatch | None = None
        if cfg.train.protocol == "fixed_batch":
            # the same draw the training loop makes first from this seed's training stream
            self.train_batch = self.task.sample(cfg.train.batch_size, generator(seed, "train"), dtype, device)
        # out-of-distribution test prompts: the same rotation U (it depends on the seed only)
        self.shift_tasks = {name: RegressionTask(task, seed) for name, task in cfg.shifted_tasks().items()}
        self.shifts = {
            name: task.sample(cfg.eval.batch_size, generator(seed, "test", "shift", name), dtype, device)
            for name, task in self.shift_tasks.items()
        }

    def eval_splits(self) -> dict[str, RegressionBatch]:
        """Held-out batches every method is scored on: ``test`` and ``shift:<name>`` for each shift."""
        return {"test": self.test, **{f"shift:{k}": v for k, v in self.shifts.items()}}
