"""Layerwise training objectives: descent constraints (slacks, Lagrangian, multipliers and their dual ascent,
remedies for infeasible constraints) and LayerSkip's early-exit loss."""

from unrolled.constrained.calibration import Calibration, calibrate
from unrolled.constrained.config import CalibrationConfig, ConstraintConfig, EarlyExitConfig
from unrolled.constrained.descent import DescentConstraints, violation_share
from unrolled.constrained.early_exit import EarlyExitObjective, early_exit_scales
from unrolled.constrained.factory import objective_from_config
from unrolled.constrained.infeasibility import InfeasibilityMonitor, task_weight
from unrolled.constrained.lagrangian import ConstrainedObjective
from unrolled.constrained.multipliers import Multipliers, all_reduce_mean
from unrolled.constrained.objective import ERMObjective, Objective

__all__ = [
    "Calibration",
    "CalibrationConfig",
    "ConstrainedObjective",
    "ConstraintConfig",
    "DescentConstraints",
    "ERMObjective",
    "EarlyExitConfig",
    "EarlyExitObjective",
    "InfeasibilityMonitor",
    "Multipliers",
    "Objective",
    "all_reduce_mean",
    "calibrate",
    "early_exit_scales",
    "objective_from_config",
    "task_weight",
    "violation_share",
]
