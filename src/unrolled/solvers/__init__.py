"""Classical first-order methods, batched over prompts, and their tuning."""

from unrolled.solvers.classical import (
    LFOM,
    ConjugateGradient,
    FirstOrderSolver,
    GradientDescent,
    HeavyBall,
    LeastSquares,
    Nesterov,
    UnrolledLFOM,
    linear_readout,
)
from unrolled.solvers.tuning import TunedSetting, default_lr_grid, tune

__all__ = [
    "LFOM",
    "ConjugateGradient",
    "FirstOrderSolver",
    "GradientDescent",
    "HeavyBall",
    "LeastSquares",
    "Nesterov",
    "TunedSetting",
    "UnrolledLFOM",
    "default_lr_grid",
    "linear_readout",
    "tune",
]
