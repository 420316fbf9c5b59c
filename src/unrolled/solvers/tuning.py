"""Step sizes of classical methods tuned on validation prompts, per depth (a grid search, batched)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from unrolled.solvers.classical import FirstOrderSolver, LeastSquares, Objective
from unrolled.tasks.regression import RegressionBatch

DEFAULT_MOMENTA = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class TunedSetting:
    """The best grid point for one depth: its step size, momentum and validation loss."""

    depth: int
    lr: float
    momentum: float | None
    validation_loss: float


def default_lr_grid(batch: RegressionBatch, objective: Objective, points: int = 40) -> tuple[float, ...]:
    """Step sizes c / λ for c log-spaced in [0.01, 2], λ the median over prompts of λ_max(H).

    Scale-free: the grid follows the data's curvature, so it suits any d, n, variance and objective.
    """
    H = LeastSquares.from_batch(batch.to(dtype=torch.float64), objective).H
    lam = torch.linalg.eigvalsh(H)[:, -1].median().item()
    grid = torch.logspace(math.log10(0.01), math.log10(2.0), points, dtype=torch.float64) / lam
    return tuple(grid.tolist())


def tune(
    make: Callable[[float, float | None], FirstOrderSolver],
    batch: RegressionBatch,
    depths: Sequence[int],
    lr_grid: Sequence[float],
    momentum_grid: Sequence[float] | None = None,
) -> dict[int, TunedSetting]:
    """Grid-search (lr, momentum) for every depth on validation prompts.

    Args:
        make: builds a solver from (lr, momentum); momentum is None when ``momentum_grid`` is None.
        batch: validation prompts (never the test prompts).
        depths: the depths L to tune for; each gets its own best setting (validation loss at step L).
        lr_grid, momentum_grid: the candidates.

    Returns:
        depth -> :class:`TunedSetting`. Diverging grid points (non-finite loss) are never chosen.
    """
    max_depth = max(depths)
    best: dict[int, TunedSetting] = {}
    moms: Sequence[float | None] = list(momentum_grid) if momentum_grid is not None else [None]
    with torch.no_grad():
        for mom in moms:
            for lr in lr_grid:
                losses = make(float(lr), mom)(batch, max_depth).layerwise_losses(batch.y_query)
                for L in depths:
                    loss = float(losses[L])
                    if math.isfinite(loss) and (L not in best or loss < best[L].validation_loss):
                        best[L] = TunedSetting(L, float(lr), mom, loss)
    missing = [L for L in depths if L not in best]
    if missing:
        raise RuntimeError(f"every grid point diverged at depths {missing}; widen lr_grid")
    return best
