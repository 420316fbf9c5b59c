"""Shared fixtures: small seeded prompt batches in float64 for exact comparisons."""

from __future__ import annotations

import os

import pytest
import torch

from unrolled.tasks import RegressionBatch, RegressionTask
from unrolled.tasks.regression import RegressionConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The prompts here are small: one intra-op thread is fastest (and on some VMs two OpenMP threads make every
# parallel op wait milliseconds for a wake-up).
torch.set_num_threads(1)


def make_batch(
    batch_size: int = 64, seed: int = 0, dtype: torch.dtype = torch.float64, **task_kwargs: object
) -> RegressionBatch:
    """A batch of prompts from a :class:`RegressionTask` (default: non-isotropic, d = 5, n = 20)."""
    task = RegressionTask(RegressionConfig(**task_kwargs), seed=seed)  # type: ignore[arg-type]
    return task.sample(batch_size, torch.Generator().manual_seed(seed + 1000), dtype=dtype)


@pytest.fixture
def batch64() -> RegressionBatch:
    return make_batch()
