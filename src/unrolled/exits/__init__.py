"""Depth on demand: early exit for every layer-by-layer solver of the library (issue 31).

* :mod:`~unrolled.exits.rules` — when a sample stops: fixed depth, confidence, entropy (DeeBERT), patience
  (PABEE), small step (the optimizer's own stopping rule).
* :mod:`~unrolled.exits.steppers` — models run one layer at a time on a shrinking batch.
* :mod:`~unrolled.exits.runner` — :func:`run_with_exit` (layers really skipped, timed), :func:`simulate_exits`.
* :mod:`~unrolled.exits.calibrate` — thresholds chosen on held-out data for a quality budget; curves.

Language models exit through transformers' own ``assistant_early_exit`` (self-speculative decoding), not here.
"""

from unrolled.exits.calibrate import (
    ACCURACY,
    MSE,
    RMSE,
    Budget,
    Calibration,
    CurvePoint,
    Quality,
    calibrate,
    depth_rule,
    fixed_depth_curve,
    sweep,
)
from unrolled.exits.rules import (
    Confidence,
    Entropy,
    ExitRule,
    FixedDepth,
    Patience,
    SmallStep,
    make_rule,
)
from unrolled.exits.runner import ExitResult, layer_predictions, run_with_exit, simulate_exits, timed
from unrolled.exits.steppers import State, Stepper, stepper_for

__all__ = [
    "ACCURACY",
    "MSE",
    "RMSE",
    "Budget",
    "Calibration",
    "Confidence",
    "CurvePoint",
    "Entropy",
    "ExitResult",
    "ExitRule",
    "FixedDepth",
    "Patience",
    "Quality",
    "SmallStep",
    "State",
    "Stepper",
    "calibrate",
    "depth_rule",
    "fixed_depth_curve",
    "layer_predictions",
    "make_rule",
    "run_with_exit",
    "simulate_exits",
    "stepper_for",
    "sweep",
    "timed",
]
