"""Constrained learning of layerwise descent: slacks, Lagrangian, multipliers and their dual ascent."""

from unrolled.constrained.descent import DescentConstraints, violation_share
from unrolled.constrained.multipliers import Multipliers, all_reduce_mean
from unrolled.constrained.objective import ConstrainedObjective, ERMObjective, Objective

__all__ = [
    "ConstrainedObjective",
    "DescentConstraints",
    "ERMObjective",
    "Multipliers",
    "Objective",
    "all_reduce_mean",
    "violation_share",
]
