"""Tasks: samplers of batched problems."""

from unrolled.tasks.regression import RegressionBatch, RegressionTask, random_rotation

__all__ = ["RegressionBatch", "RegressionTask", "random_rotation"]
