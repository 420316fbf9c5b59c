"""Spotting constraints that cannot be met, and how much of the Lagrangian is still the task.

A constraint that the model can meet ends up with its slack hovering at or below 0 and its multiplier steady.
One that it cannot meet keeps a positive slack at every dual step, so projected ascent makes its multiplier
grow without end, and the Lagrangian f_L + Σ λ_l s_l weighs the intermediate losses more and more against the
task loss f_L (in the SFT runs of issue 10, Σλ ≈ 44: about 40 times the task). Nothing in the training loss
shows it; this module does.

:class:`InfeasibilityMonitor` looks at the slack estimates of the last ``window`` dual steps: a constraint
whose slack was positive at (at least) ``share`` of them, and is not on its way down (the mean slack of the
window's second half is more than ``fall`` times that of its first half: a constraint that the model is
meeting, slowly, is left alone), is *infeasible*. It says how: its multiplier is ``growing`` (projected
ascent, the case to act on), ``capped`` at λ_max (bounded multipliers: the elastic penalty is paying for it),
or ``relaxed`` (resilient multipliers: the relaxation u = λ / c absorbs it). Each layer is named in the log
once per run, with the remedies that fit how its multipliers move.

:func:`task_weight` is the share of the loss's gradient that is the task's: 1 / Σ_l |w_l|, with w_l = ∂L/∂f_l
the weight of layer l's loss in the objective (for the Lagrangian with f_{l−1} detached, 1 / (1 + Σ λ_l)).
The monitor also warns, once, when it falls below ``task_floor``: multipliers that each look harmless can
together swamp the task (issue 17's SFT run with calibrated targets ended at 0.03 with no single constraint
positive at 90% of its dual steps, the slacks oscillating around targets that kept moving).

A short run has few dual steps (180 steps with a dual step every 10: 18), fewer than a window of 20 needs
before it can flag anything. :meth:`InfeasibilityMonitor.fit` shrinks the window to a third of the run's dual
steps (the trainers call it at the start through ``Objective.sync_step``), so a constraint infeasible from the
start is named by a third of the way through whatever the run's length, but never to fewer than
:data:`MIN_DUAL_STEPS`: a slack positive at two or three dual steps is what every constraint shows at the start
of training, and a monitor that alarms on it teaches users to ignore it. A run with fewer dual steps than that
gets no verdict; its report says it was too short to tell (``too_short``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from torch import Tensor

logger = logging.getLogger("unrolled.constrained")

MIN_DUAL_STEPS = 10
"""The fewest dual steps a fitted monitor looks at before it calls a constraint infeasible."""

REMEDIES = {
    "projected": "bounded multipliers (multiplier_max), resilient relaxation (resilient_cost), targets "
    "calibrated on the model before training (calibrate), or leaving these layers out (layers); see "
    "docs/CONSTRAINTS.md",
    "bounded": "their multipliers are capped (multiplier_max), so what these constraints cost the task is "
    "bounded; to stop paying it, calibrate the targets on the model before training (calibrate) or leave "
    "these layers out (layers); see docs/CONSTRAINTS.md",
    "resilient": "the resilient relaxation (resilient_cost) absorbs the violation at u = λ / c; to allow less of "
    "it raise resilient_cost, or calibrate the targets on the model (calibrate), or leave these layers out "
    "(layers); see docs/CONSTRAINTS.md",
}
"""What the log line suggests, by how the multipliers move."""


def task_weight(weights: Tensor, task: float = 1.0) -> float:
    """``task / Σ |w_l|``: the share of the objective's layer weights ``[L + 1]`` that the task loss holds."""
    total = float(weights.abs().sum())
    return task / total if total > 0 else 1.0


class InfeasibilityMonitor:
    """Flags constraints whose slack stayed positive over the last ``window`` dual steps.

    Args:
        num: the number of constraints L.
        window: dual steps looked at (a constraint needs that many observations before it can be flagged).
        share: the share of them with a positive slack that makes a constraint infeasible.
        fall: a constraint whose mean slack over the window's second half is at most ``fall`` times that of
            its first half is on its way to being met, and is not flagged.
        kind: how the multipliers move, ``projected``, ``bounded`` or ``resilient``: names the status.
        where: a label for the log line (the method and seed, say).
        task_floor: warn (once) when the task's share of the loss, :func:`task_weight`, falls below it
            (0: never).
    """

    def __init__(
        self,
        num: int,
        window: int = 20,
        share: float = 0.9,
        kind: str = "projected",
        where: str = "",
        fall: float = 0.5,
        task_floor: float = 0.25,
    ) -> None:
        if window < 2:
            raise ValueError(f"the infeasibility window needs at least 2 dual steps, got {window}")
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if not 0 <= fall < 1:
            raise ValueError(f"fall must be in [0, 1), got {fall}")
        if not 0 <= task_floor < 1:
            raise ValueError(f"task_floor must be in [0, 1), got {task_floor}")
        if kind not in REMEDIES:
            raise ValueError(f"kind must be one of {', '.join(REMEDIES)}, got {kind!r}")
        self.num, self.window, self.share, self.kind, self.where = num, window, share, kind, where
        self.fall, self.task_floor, self.requested = fall, task_floor, window
        self.too_short: int | None = None  # a fitted run's dual steps, when fewer than MIN_DUAL_STEPS
        self.task_low_since: int | None = None  # the dual step at which the task's share fell below the floor
        self._history: list[deque[tuple[float, float]]] = [deque(maxlen=window) for _ in range(num)]
        self.flagged: dict[int, str] = {}  # layer (1..L) -> status
        self.first_seen: dict[int, int] = {}  # layer -> dual step at which it was first flagged

    def fit(self, dual_steps: int) -> int:
        """Fit the window to a run of ``dual_steps`` dual steps: a third of them, at most the window asked
        for, at least :data:`MIN_DUAL_STEPS` (what is recorded is kept). A run with fewer dual steps than that
        gets no verdict (:attr:`too_short`). Returns the window."""
        window = max(MIN_DUAL_STEPS, min(self.requested, dual_steps // 3))
        self.too_short = dual_steps if dual_steps < MIN_DUAL_STEPS else None
        if self.too_short is not None:
            logger.info(
                "%s: %d dual steps, too few to tell whether a constraint is infeasible (%d needed); no verdict",
                self.where or "constraints", dual_steps, MIN_DUAL_STEPS,
            )  # fmt: skip
        if window != self.window:
            if window < self.requested and self.too_short is None:
                logger.info(
                    "infeasibility window: %d dual steps (the run has %d; %d were asked for)",
                    window, dual_steps, self.requested,
                )  # fmt: skip
            self.window = window
            self._history = [deque(h, maxlen=window) for h in self._history]
        return window

    def update(
        self,
        slack: Tensor,
        multipliers: Tensor,
        observed: Tensor | None,
        dual_step: int,
        task_weight: float | None = None,
    ) -> list[int]:
        """Record one dual step (slack estimates and multipliers after the step, ``[L]``, and the task's share
        of the loss at the new multipliers); returns the layers flagged for the first time in this run, and
        logs a warning naming them (and one when the task's share first falls below ``task_floor``)."""
        if task_weight is not None and task_weight < self.task_floor and self.task_low_since is None:
            self.task_low_since = dual_step
            label = f" ({self.where})" if self.where else ""
            logger.warning(
                "the task loss holds %.1f%% of the loss's weight at dual step %d%s (Σλ = %.3g): the constraints' "
                "losses outweigh it. Remedies: %s.",
                100 * task_weight, dual_step, label, float(multipliers.sum()), REMEDIES[self.kind],
            )  # fmt: skip
        seen = [True] * self.num if observed is None else [bool(v) for v in observed]
        for l in range(self.num):
            if seen[l]:
                self._history[l].append((float(slack[l]), float(multipliers[l])))
        now: dict[int, str] = {}
        for l, history in enumerate(self._history):
            if len(history) < self.window:
                continue
            positive = sum(s > 0 for s, _ in history) / len(history)
            if positive < self.share or self._falling([s for s, _ in history]):
                continue
            first_lam, last_lam = history[0][1], history[-1][1]
            if self.kind == "resilient":
                status = "relaxed"
            elif self.kind == "bounded" and last_lam <= first_lam:
                status = "capped"
            else:
                status = "growing"
            now[l + 1] = status
        new = sorted(l for l in now if l not in self.first_seen)  # each layer is named once per run
        self.flagged = now
        for l in new:
            self.first_seen[l] = dual_step
        if new:
            lam = ", ".join(f"λ_{l} = {float(multipliers[l - 1]):.3g}" for l in new)
            label = f" ({self.where})" if self.where else ""
            logger.warning(
                "constraints on layers %s look infeasible%s: their slack stayed positive over the last %d "
                "dual steps (%s). Remedies: %s.",
                ", ".join(map(str, new)),
                label,
                self.window,
                lam,
                REMEDIES[self.kind],
            )
        return new

    def _falling(self, slacks: list[float]) -> bool:
        """Whether the mean slack of the window's second half is at most ``fall`` times its first half's."""
        half = len(slacks) // 2
        early, late = sum(slacks[:half]) / half, sum(slacks[-half:]) / half
        return early > 0 and late <= self.fall * early

    def report(self) -> dict[str, Any]:
        """What a run records: the infeasible layers now, how, and when they were first flagged."""
        out = {
            "infeasible_layers": sorted(self.flagged),
            "infeasible_status": {str(l): s for l, s in sorted(self.flagged.items())},
            "infeasible_since": {str(l): self.first_seen[l] for l in sorted(self.flagged)},
            "task_weight_low_since": self.task_low_since,
        }
        if self.too_short is not None:
            out["too_short"] = f"{self.too_short} dual steps, {MIN_DUAL_STEPS} needed for a verdict"
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self._history],
            "flagged": dict(self.flagged),
            "first_seen": dict(self.first_seen),
            "task_low_since": self.task_low_since,
            "too_short": self.too_short,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._history = [deque(map(tuple, h), maxlen=self.window) for h in state["history"]]
        if len(self._history) != self.num:
            raise ValueError(
                f"monitor state for {len(self._history)} constraints, this problem has {self.num}"
            )
        self.flagged = {int(k): v for k, v in state["flagged"].items()}
        self.first_seen = {int(k): int(v) for k, v in state["first_seen"].items()}
        self.task_low_since = state.get("task_low_since")  # absent in checkpoints written before the floor
        self.too_short = state.get("too_short")
