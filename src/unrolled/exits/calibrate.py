"""Thresholds calibrated on held-out data for a target loss of quality, and quality-against-compute curves.

As CALM (Schuster et al. 2022) and DeeBERT do, a rule's threshold is chosen on held-out samples: the one that
runs the fewest layers on average while the quality stays within a budget of the full model's (for instance
at most 1 point of accuracy, or 2% more RMSE). It is then reported on the test split, where nothing was chosen.
Sweeps use :func:`~unrolled.exits.runner.simulate_exits` on the predictions of every layer (one full pass per
split), which gives exactly the exits of a run that skips layers (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from unrolled.exits.rules import ExitRule, FixedDepth
from unrolled.exits.runner import simulate_exits


@dataclass(frozen=True)
class Quality:
    """A quality measure ``(prediction [B, ...], target) -> float`` and which way is better."""

    name: str
    fn: Callable[[Tensor, Tensor], float]
    higher_is_better: bool

    def __call__(self, prediction: Tensor, target: Tensor) -> float:
        return float(self.fn(prediction, target))


def _accuracy(prediction: Tensor, target: Tensor) -> float:
    return float((prediction.argmax(dim=-1) == target).float().mean())


def _mse(prediction: Tensor, target: Tensor) -> float:
    return float((prediction - target).float().square().mean())


ACCURACY = Quality("accuracy", _accuracy, True)
MSE = Quality("mse", _mse, False)
RMSE = Quality("rmse", lambda p, t: math.sqrt(_mse(p, t)), False)


@dataclass(frozen=True)
class Budget:
    """How much quality an exit may lose: ``tolerance`` of the full model's (``relative``) or in the
    measure's units. ``Budget(0.01, relative=False)`` with accuracy: at most 1 point; ``Budget(0.02)`` with
    RMSE: at most 2% above the full model's."""

    tolerance: float
    relative: bool = True

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    def allows(self, quality: Quality, value: float, full: float) -> bool:
        slack = self.tolerance * abs(full) if self.relative else self.tolerance
        return value >= full - slack if quality.higher_is_better else value <= full + slack


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    quality: float
    mean_layers: float


@dataclass(frozen=True)
class Calibration:
    """A rule calibrated on held-out data.

    Attributes:
        rule: the rule at the chosen threshold (None: no threshold met the budget; run the full model).
        full_quality: the full model's held-out quality.
        point: the chosen threshold's held-out quality and mean layers.
        curve: every threshold swept, held out.
    """

    rule: ExitRule | None
    full_quality: float
    point: CurvePoint | None
    curve: tuple[CurvePoint, ...] = field(default_factory=tuple)


def sweep(predictions: Tensor, target: Tensor, rule: ExitRule, thresholds: Sequence[float],
          quality: Quality) -> list[CurvePoint]:  # fmt: skip
    """Quality and mean layers of ``rule`` at every threshold, from the layer predictions ``[L + 1, B, ...]``."""
    points = []
    for t in thresholds:
        result = simulate_exits(predictions, rule.with_threshold(t))
        points.append(CurvePoint(float(t), quality(result.prediction, target), result.mean_layers))
    return points


def fixed_depth_curve(predictions: Tensor, target: Tensor, quality: Quality) -> list[CurvePoint]:
    """The model truncated after every layer l = 1..L: its quality against l."""
    return [
        CurvePoint(float(l), quality(predictions[l], target), float(l))
        for l in range(1, predictions.shape[0])
    ]


def calibrate(predictions: Tensor, target: Tensor, rule: ExitRule, thresholds: Sequence[float], quality: Quality,
              budget: Budget) -> Calibration:  # fmt: skip
    """The threshold that runs the fewest layers on average with held-out quality within ``budget`` of the
    full model's (ties: the most conservative threshold). ``predictions``: held-out, ``[L + 1, B, ...]``."""
    if not thresholds:
        raise ValueError("calibrate needs at least one threshold")
    full = quality(predictions[-1], target)
    curve = sweep(predictions, target, rule, thresholds, quality)
    ok = [p for p in curve if budget.allows(quality, p.quality, full)]
    if not ok:
        return Calibration(None, full, None, tuple(curve))
    conservative = sorted(ok, key=lambda p: p.threshold, reverse=rule.later_is_larger)  # latest exits first
    best = min(conservative, key=lambda p: p.mean_layers)
    return Calibration(rule.with_threshold(best.threshold), full, best, tuple(curve))


def depth_rule(calibration: Calibration, depth: int) -> ExitRule:
    """The calibrated rule, or the full model (``FixedDepth(depth)``) when no threshold met the budget."""
    return calibration.rule if calibration.rule is not None else FixedDepth(layers=depth)
