"""Training objectives: ERM on the last layer, or the constrained Lagrangian with dual ascent.

The trainer calls :meth:`Objective.loss` on every primal step and :meth:`Objective.after_step` after the
optimizer step; the constrained objective takes its dual steps there. Both work for any solver of the library,
since they only read the trajectory's layerwise losses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from unrolled.constrained.descent import DescentConstraints
from unrolled.constrained.multipliers import Multipliers
from unrolled.trajectory import LossFn, Trajectory, squared_error


class Objective:
    """ERM: minimise the mean per-sample loss of the last layer's readout."""

    constrained = False

    def __init__(self, per_sample_loss: LossFn | None = squared_error) -> None:
        self.per_sample_loss = per_sample_loss  # None: the trajectory's own state_loss (e.g. a logit lens)

    def loss(self, trajectory: Trajectory, target: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The scalar to back-propagate, and what to log."""
        return trajectory.sample_losses(trajectory.final, target, self.per_sample_loss).mean(), {}

    def after_step(self, step: int, heldout_slack: Callable[[], Tensor] | None = None) -> dict[str, Any]:
        """Called after each optimizer step (the dual update of the constrained objective)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


ERMObjective = Objective


class ConstrainedObjective(Objective):
    """Primal: f_L + Σ λ_l s_l. Dual: every ``dual_every`` primal steps, λ ← [(1 − 1/ρ)λ + η_λ ŝ]_+.

    Args:
        constraints: the descent constraints (α per layer, detach switch).
        multipliers: λ and its ascent rule.
        per_sample_loss: ``(prediction, target) -> [B]``; None: the trajectory's own ``state_loss``.
        dual_every: primal steps between dual steps.
        dual_source: ``"train"``, ŝ = the mean slack over the training batches since the last dual step, or
            ``"heldout"``, ŝ = the slack on a held-out constraint batch (the trainer passes a function that
            computes it).
    """

    constrained = True
    recompute_readouts = True
    """Recompute intermediate readouts in the backward pass (memory for time); a wrapper may turn it off when
    its readouts are cheap or recomputation does not suit it (DDP's gradient hooks fire once per recomputed
    use of a shared readout's parameters)."""

    def __init__(
        self,
        constraints: DescentConstraints,
        multipliers: Multipliers,
        per_sample_loss: LossFn | None = squared_error,
        dual_every: int = 1,
        dual_source: str = "train",
    ) -> None:
        super().__init__(per_sample_loss)
        if dual_every < 1:
            raise ValueError(f"dual_every must be >= 1, got {dual_every}")
        if dual_source not in ("train", "heldout"):
            raise ValueError(f"dual_source must be 'train' or 'heldout', got {dual_source!r}")
        self.constraints, self.multipliers = constraints, multipliers
        self.dual_every, self.dual_source = dual_every, dual_source
        self._slack_sum: Tensor | None = None
        self._slack_count = 0

    def gradient_weights(self, depth: int) -> Tensor:
        """∂(f_L + Σ λ_l s_l)/∂f_l for l = 0..L at the current multipliers: ``[L + 1]``."""
        lam = self.multipliers.value
        if lam.numel() != depth:
            raise ValueError(f"{lam.numel()} multipliers for a trajectory of {depth} layers")
        alpha = self.constraints.alphas(depth, lam)
        weights = torch.zeros(depth + 1, dtype=lam.dtype)
        weights[1:] += lam
        weights[-1] += 1.0
        if not self.constraints.detach_previous:
            weights[:-1] -= (1 - alpha) * lam
        return weights

    def layer_losses(self, trajectory: Trajectory, target: Tensor) -> Tensor:
        """f_0..f_L ``[L + 1]``; layers whose Lagrangian weight is zero are read out without a graph.

        The Lagrangian's gradient is Σ_l w_l ∇f_l with w = :meth:`gradient_weights`; while a layer's
        multipliers are zero its w_l is 0, so its readout needs no backward pass (same gradient, less work).
        The readouts of the other intermediate layers are recomputed in the backward pass rather than stored
        (activation checkpointing): the constraints then cost almost no memory beyond ERM's.
        """
        weights = self.gradient_weights(trajectory.depth)

        def layer_loss(state: Tensor) -> Tensor:
            return trajectory.sample_losses(state, target, self.per_sample_loss).mean()

        losses = []
        for l, (state, w) in enumerate(zip(trajectory.states, weights, strict=True)):
            if w == 0:
                with torch.no_grad():
                    losses.append(layer_loss(state))
            elif l == trajectory.depth or not state.requires_grad or not self.recompute_readouts:
                losses.append(layer_loss(state))
            else:  # recompute this readout in the backward pass instead of keeping its activations
                losses.append(checkpoint(layer_loss, state, use_reentrant=False))
        return torch.stack(losses)

    def loss(self, trajectory: Trajectory, target: Tensor) -> tuple[Tensor, dict[str, Any]]:
        return self.lagrangian(self.layer_losses(trajectory, target))

    def lagrangian(self, losses: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """f_L + Σ λ_l s_l from layerwise losses ``[L + 1]`` computed by the caller (e.g. a trainer that reads
        the last layer from its own loss); the slacks are kept for the next dual step."""
        slacks = self.constraints.slacks(losses)
        lagrangian = losses[-1] + (self.multipliers.as_tensor(slacks) * slacks).sum()
        s = slacks.detach().to(torch.float64).cpu()
        self._slack_sum = s if self._slack_sum is None else self._slack_sum + s
        self._slack_count += 1
        info = {
            "layer_losses": [float(v) for v in losses.detach()],
            "slacks": [float(v) for v in s],
            "multipliers": [float(v) for v in self.multipliers.value],
        }
        return lagrangian, info

    def after_step(self, step: int, heldout_slack: Callable[[], Tensor] | None = None) -> dict[str, Any]:
        if step % self.dual_every != 0:
            return {}
        if self.dual_source == "heldout":
            if heldout_slack is None:
                raise ValueError("dual_source 'heldout' needs a held-out constraint batch")
            estimate = heldout_slack().detach().to(torch.float64).cpu()
        else:
            assert self._slack_sum is not None
            estimate = self._slack_sum / self._slack_count
        self._slack_sum, self._slack_count = None, 0
        value = self.multipliers.step(estimate)
        return {
            "dual_step": self.multipliers.steps,
            "slack_estimate": estimate.tolist(),
            "multipliers": value.tolist(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "multipliers": self.multipliers.state_dict(),
            "slack_sum": self._slack_sum,
            "slack_count": self._slack_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.multipliers.load_state_dict(state["multipliers"])
        self._slack_sum, self._slack_count = state["slack_sum"], int(state["slack_count"])


def objective_from_config(
    config: Any,
    depth: int,
    per_sample_loss: LossFn | None,
    heldout_batch: Callable[[int], tuple[Any, Tensor]] | None = None,
) -> tuple[Objective, Callable[[torch.nn.Module], Tensor] | None]:
    """The objective a :class:`~unrolled.config.ConstraintConfig` (or None: ERM) describes for ``depth`` layers.

    Args:
        config: the method's ``constraints`` entry, or None for ERM on the last layer.
        depth: the model's number of layers L.
        per_sample_loss: ``(prediction, target) -> [B]``; None: the trajectory's own ``state_loss``.
        heldout_batch: ``size -> (inputs, target)``, a held-out constraint batch (inputs a tensor, a batch
            object, or a mapping of keyword inputs); called only for ``dual_source: heldout``.

    Returns:
        The objective, and for ``dual_source: heldout`` the function ``model -> slacks [L]`` the trainer
        calls at each dual step (else None).
    """
    if config is None:
        return Objective(per_sample_loss), None
    constraints = DescentConstraints(config.alpha_for(depth), config.detach_previous, config.layers)
    objective = ConstrainedObjective(
        constraints,
        Multipliers(depth, config.dual_lr, config.resilient_rho),
        per_sample_loss,
        dual_every=config.dual_every,
        dual_source=config.dual_source,
    )
    if config.dual_source != "heldout":
        return objective, None
    if heldout_batch is None:
        raise ValueError("dual_source 'heldout' needs a held-out constraint batch")
    inputs, target = heldout_batch(config.heldout_size)

    def heldout_slack(model: torch.nn.Module) -> Tensor:
        with torch.no_grad():
            trajectory = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
            return constraints.slacks(trajectory.layerwise_losses(target, per_sample_loss))

    return objective, heldout_slack
