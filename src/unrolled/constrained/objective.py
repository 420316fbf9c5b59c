"""Training objectives: ERM on the last layer, the constrained Lagrangian with dual ascent, or (in
:mod:`unrolled.constrained.early_exit`) LayerSkip's early-exit loss.

The trainer calls :meth:`Objective.loss` on every primal step and :meth:`Objective.after_step` after the
optimizer step; the constrained objective takes its dual steps there. They work for any solver of the
library, since they only read the trajectory's layerwise losses.

A trainer whose readouts are expensive (the SFT trainer's logit lens) reads layers itself instead: it asks
:meth:`Objective.readout_plan` which layers need a graph (a non-zero weight in the loss) and which only a
value (the targets f_{l−1} of active constraints; every constrained layer on a *monitoring* batch, the ones
dual steps and logs are measured on), reads those, and hands the losses with a mask of what it read to
:meth:`Objective.combine`. Every objective reports :meth:`Objective.task_weight`, the share of the loss's
layer weights that the task loss holds.

A compiled step (:mod:`unrolled.train.compiled`, ``train.compile``) splits an objective in two: a traced
part, :meth:`Objective.traced_loss`, that reads every layer it may weigh and forms the loss with no host
syncs and no Python branches on values (what changes from step to step, the multipliers or the early-exit
weights, comes in as tensors from :meth:`Objective.step_tensors`, so the compiler sees data, not constants),
and :meth:`Objective.record`, the eager bookkeeping of the losses it returns (slack sums for the dual
steps, what to log). The eager :meth:`Objective.loss` is the two in one, with the readouts that carry no
weight read without a graph.

The constrained Lagrangian is :class:`~unrolled.constrained.lagrangian.ConstrainedObjective`; the objective a
config describes, :func:`~unrolled.constrained.factory.objective_from_config`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from unrolled.trajectory import LossFn, Trajectory, squared_error


def read_layers(
    trajectory: Trajectory,
    target: Tensor,
    weights: list[float],
    per_sample_loss: LossFn | None,
    recompute: bool = True,
) -> Tensor:
    """f_0..f_L ``[L + 1]``, one readout per layer: with a graph where ``weights[l]`` ≠ 0 (intermediate ones
    recomputed in the backward pass when ``recompute``), without one elsewhere."""

    def layer_loss(state: Tensor) -> Tensor:
        return trajectory.sample_losses(state, target, per_sample_loss).mean()

    losses = []
    for l, (state, w) in enumerate(zip(trajectory.states, weights, strict=True)):
        if w == 0:
            with torch.no_grad():
                losses.append(layer_loss(state))
        elif l == trajectory.depth or not state.requires_grad or not recompute:
            losses.append(layer_loss(state))
        else:  # recompute this readout in the backward pass instead of keeping its activations
            losses.append(checkpoint(layer_loss, state, use_reentrant=False))
    return torch.stack(losses)


def listed(values: Tensor, observed: Tensor | None = None) -> list[float | None]:
    """A tensor as a list for logs, None where not ``observed``."""
    out = values.detach().double().cpu().tolist()
    if observed is None:
        return out
    return [v if bool(o) else None for v, o in zip(out, observed.tolist(), strict=True)]


class Objective:
    """ERM: minimise the mean per-sample loss of the last layer's readout."""

    constrained = False
    reads_layers = False
    """Whether intermediate layers enter the loss (a trainer need not read them when False)."""
    recompute_readouts = True
    """Recompute intermediate readouts in the backward pass (memory for time); a wrapper may turn it off when
    its readouts are cheap or recomputation does not suit it (DDP's gradient hooks fire once per recomputed
    use of a shared readout's parameters)."""

    def __init__(self, per_sample_loss: LossFn | None = squared_error) -> None:
        self.per_sample_loss = per_sample_loss  # None: the trajectory's own state_loss (e.g. a logit lens)

    @property
    def needs_calibration(self) -> bool:
        """Whether the trainer must call ``calibrate`` with the model's layerwise losses before training."""
        return False

    def layer_weights(self, depth: int) -> Tensor:
        """∂loss/∂f_l for l = 0..L at the current state: ``[L + 1]`` (float64)."""
        weights = torch.zeros(depth + 1, dtype=torch.float64)
        weights[-1] = 1.0
        return weights

    def task_weight(self, depth: int) -> float:
        """The share of the loss's layer weights that the task loss f_L holds (1 for ERM)."""
        return 1.0

    def readout_plan(self, depth: int, monitor: bool) -> tuple[list[int], list[int]]:
        """The intermediate layers (0..L−1) to read with a graph, and those to read for their value only;
        ``monitor``: this batch is one that dual steps or logs are measured on."""
        return [], []

    def combine(self, losses: Tensor, observed: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        """The loss from layerwise losses ``[L + 1]`` a trainer read itself (``observed``: which, ``[L + 1]``
        bool; the others may hold anything), and what to log."""
        return losses[-1], {}

    def loss(self, trajectory: Trajectory, target: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The scalar to back-propagate, and what to log."""
        return trajectory.sample_losses(trajectory.final, target, self.per_sample_loss).mean(), {}

    def step_tensors(self, target: Tensor) -> dict[str, Tensor]:
        """What :meth:`traced_loss` needs this step, as tensors on ``target``'s device (a compiler sees them
        as data, so new values do not recompile): none for ERM."""
        return {}

    def traced_loss(
        self, trajectory: Trajectory, target: Tensor, tensors: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """The loss, and the layerwise losses it read (detached; ``[L + 1]``, or ``[1]``: the last layer's),
        with no host syncs and no branches on values: the part of a step that ``train.compile`` compiles.
        Every layer the loss may weigh is read with a graph (a weight of zero gives a zero gradient)."""
        loss = trajectory.sample_losses(trajectory.final, target, self.per_sample_loss).mean()
        return loss, loss.detach().reshape(1)

    def record(self, losses: Tensor) -> dict[str, Any]:
        """The bookkeeping of a :meth:`traced_loss` (eager): what :meth:`loss` would have logged."""
        return {}

    def after_step(self, step: int, heldout_slack: Callable[[], Tensor] | None = None) -> dict[str, Any]:
        """Called after each optimizer step (the dual update of the constrained objective)."""
        return {}

    def sync_step(self, step: int, total_steps: int) -> None:
        """The trainer says where training stands (at its start, and after a resume): ``step`` optimizer steps
        taken of ``total_steps``. Objectives with a schedule (the early-exit curriculum) follow it."""
        return

    def report(self) -> dict[str, Any]:
        """What a run records at the end (infeasible constraints, calibrated targets); {} for ERM."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


ERMObjective = Objective
