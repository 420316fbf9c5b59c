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
from unrolled.constrained.subsample import subsample
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
        readout_fraction: read the intermediate layers on this share of each batch's samples (an unbiased
            estimate; the last layer in full); 1: every sample. Needs a trajectory with an affine readout.
        generator: draws those subsets (its state is saved with the objective's).
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
        readout_fraction: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(per_sample_loss)
        if not 0 < readout_fraction <= 1:
            raise ValueError(f"readout_fraction must be in (0, 1], got {readout_fraction}")
        self.readout_fraction = readout_fraction
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
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

        When the objective uses the trajectory's own loss (``per_sample_loss=None``) and the trajectory
        describes its readout as affine (:attr:`Trajectory.affine_readout`, the video denoisers), the
        intermediate layers are read out together in Gram form (:mod:`unrolled.constrained.gram`: one
        ``[D, D]`` product per layer, no ``[B, T, P]`` prediction), on ``readout_fraction`` of the samples;
        the last layer always through ``state_loss``, in full. Otherwise each intermediate readout is
        recomputed in the backward pass rather than stored (activation checkpointing): either way the
        constraints cost almost no memory beyond ERM's.
        """
        weights = self.gradient_weights(trajectory.depth).tolist()
        affine = trajectory.affine_readout if self.per_sample_loss is None else None
        if affine is None:
            if self.readout_fraction < 1:
                raise ValueError(
                    "readout_fraction < 1 needs a trajectory with an affine readout (Trajectory.affine_readout) "
                    "and the trajectory's own loss (per_sample_loss=None)"
                )
            return self._layer_by_layer(trajectory, target, weights)
        depth, states = trajectory.depth, trajectory.states
        pick = subsample(target.shape[0], self.readout_fraction, self.generator)
        graph = [l for l in range(depth) if weights[l] != 0 and states[l].requires_grad]
        free = [l for l in range(depth) if l not in graph]
        losses: list[Tensor | None] = [None] * (depth + 1)
        terms = affine.terms(target, pick)  # shared by both groups
        if free:
            with torch.no_grad():
                values = affine.mse([states[l] for l in free], terms).mean(dim=1)
            for l, v in zip(free, values, strict=True):
                losses[l] = v
        if graph:
            values = affine.mse([states[l] for l in graph], terms).mean(dim=1)
            for l, v in zip(graph, values, strict=True):
                losses[l] = v
        losses[depth] = trajectory.sample_losses(states[depth], target).mean()
        return torch.stack(losses)  # type: ignore[arg-type]

    def _layer_by_layer(self, trajectory: Trajectory, target: Tensor, weights: list[float]) -> Tensor:
        """f_0..f_L, one readout per layer (intermediate ones with a graph are recomputed in the backward)."""

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
        info = {  # one conversion each (not one per layer): bookkeeping should not show in a profile
            "layer_losses": losses.detach().tolist(),
            "slacks": s.tolist(),
            "multipliers": self.multipliers.value.tolist(),
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
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.multipliers.load_state_dict(state["multipliers"])
        self._slack_sum, self._slack_count = state["slack_sum"], int(state["slack_count"])
        if "generator" in state:  # checkpoints written before subsampling existed have none
            self.generator.set_state(state["generator"])


def objective_from_config(
    config: Any,
    depth: int,
    per_sample_loss: LossFn | None,
    heldout_batch: Callable[[int], tuple[Any, Tensor]] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Objective, Callable[[torch.nn.Module], Tensor] | None]:
    """The objective a :class:`~unrolled.config.ConstraintConfig` (or None: ERM) describes for ``depth`` layers.

    Args:
        config: the method's ``constraints`` entry, or None for ERM on the last layer.
        depth: the model's number of layers L.
        per_sample_loss: ``(prediction, target) -> [B]``; None: the trajectory's own ``state_loss``.
        heldout_batch: ``size -> (inputs, target)``, a held-out constraint batch (inputs a tensor, a batch
            object, or a mapping of keyword inputs); called only for ``dual_source: heldout``.
        generator: draws the readout subsets when ``readout_fraction`` < 1.

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
        readout_fraction=config.readout_fraction,
        generator=generator,
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
