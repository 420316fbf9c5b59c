"""The objective a method's config describes: ERM, the constrained Lagrangian or the early-exit loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from unrolled.constrained.descent import DescentConstraints
from unrolled.constrained.infeasibility import InfeasibilityMonitor
from unrolled.constrained.lagrangian import ConstrainedObjective
from unrolled.constrained.multipliers import Multipliers
from unrolled.constrained.objective import Objective
from unrolled.trajectory import LossFn


def objective_from_config(
    config: Any,
    depth: int,
    per_sample_loss: LossFn | None,
    heldout_batch: Callable[[int], tuple[Any, Tensor]] | None = None,
    generator: torch.Generator | None = None,
    total_steps: int = 1,
    where: str = "",
) -> tuple[Objective, Callable[[torch.nn.Module], Tensor] | None]:
    """The objective a config describes for ``depth`` layers: None (ERM), a
    :class:`~unrolled.constrained.config.ConstraintConfig` or an
    :class:`~unrolled.constrained.config.EarlyExitConfig`.

    Args:
        config: the method's ``constraints`` or ``early_exit`` entry, or None for ERM on the last layer.
        depth: the model's number of layers L.
        per_sample_loss: ``(prediction, target) -> [B]``; None: the trajectory's own ``state_loss``.
        heldout_batch: ``size -> (inputs, target)``, a held-out constraint batch (inputs a tensor, a batch
            object, or a mapping of keyword inputs); called only for ``dual_source: heldout``.
        generator: draws the readout subsets when ``readout_fraction`` < 1.
        total_steps: the run's optimizer steps (the early-exit loss's gradual curriculum).
        where: a label for log lines (the method and seed).

    Returns:
        The objective, and for ``dual_source: heldout`` the function ``model -> slacks [L]`` the trainer
        calls at each dual step (else None).
    """
    from unrolled.constrained.config import EarlyExitConfig

    if config is None:
        return Objective(per_sample_loss), None
    config.check_depth(depth)  # before anything indexes a layer: a clear error, not an IndexError later
    if isinstance(config, EarlyExitConfig):
        from unrolled.constrained.early_exit import EarlyExitObjective

        return EarlyExitObjective(config, depth, total_steps, per_sample_loss), None
    constraints = DescentConstraints(
        config.alpha_for(depth), config.detach_previous, config.layers, config.relative
    )
    objective = ConstrainedObjective(
        constraints,
        Multipliers(depth, config.dual_lr, config.resilient_cost, config.multiplier_max),
        per_sample_loss,
        dual_every=config.dual_every,
        dual_source=config.dual_source,
        readout_fraction=config.readout_fraction,
        generator=generator,
        calibration=config.calibrate,
        monitor=InfeasibilityMonitor(
            depth,
            config.infeasibility_window,
            kind=config.multiplier_kind,
            where=where,
            task_floor=config.task_weight_floor,
        ),
    )
    if config.dual_source != "heldout":
        return objective, None
    if heldout_batch is None:
        raise ValueError("dual_source 'heldout' needs a held-out constraint batch")
    inputs, target = heldout_batch(config.heldout_size)

    def heldout_slack(model: torch.nn.Module) -> Tensor:
        with torch.no_grad():
            trajectory = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
            # objective.constraints, not constraints: calibration may have replaced them
            return objective.constraints.slacks(trajectory.layerwise_losses(target, per_sample_loss))

    return objective, heldout_slack
