"""The constrained objective: the Lagrangian f_L + Σ_l λ_l s_l of the descent constraints and its dual ascent
(Porras-Valenzuela, Hadou & Ribeiro; :mod:`unrolled.constrained.descent` for the constraints,
:mod:`unrolled.constrained.multipliers` for the ascent and its remedies).

Its readouts follow the multipliers: a layer whose Lagrangian weight is zero is read without a graph, and a
trainer that reads layers itself asks :meth:`ConstrainedObjective.readout_plan` what to read. A compiled step
reads every layer with a graph and passes λ in as a tensor (:meth:`ConstrainedObjective.traced_loss`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from unrolled.constrained.calibration import Calibration, calibrate
from unrolled.constrained.config import CalibrationConfig
from unrolled.constrained.descent import DescentConstraints
from unrolled.constrained.infeasibility import InfeasibilityMonitor, task_weight
from unrolled.constrained.multipliers import Multipliers
from unrolled.constrained.objective import Objective, listed, read_layers
from unrolled.constrained.subsample import subsample
from unrolled.trajectory import LossFn, Trajectory, squared_error

logger = logging.getLogger("unrolled.constrained")


class ConstrainedObjective(Objective):
    """Primal: f_L + Σ λ_l s_l. Dual: every ``dual_every`` primal steps, a step of the multipliers' ascent.

    Args:
        constraints: the descent constraints (α per layer, detach switch).
        multipliers: λ and its ascent rule (projected, bounded, resilient).
        per_sample_loss: ``(prediction, target) -> [B]``; None: the trajectory's own ``state_loss``.
        dual_every: primal steps between dual steps.
        dual_source: ``"train"``, ŝ = the mean slack over the training batches since the last dual step, or
            ``"heldout"``, ŝ = the slack on a held-out constraint batch (the trainer passes a function that
            computes it).
        readout_fraction: read the intermediate layers on this share of each batch's samples (an unbiased
            estimate; the last layer in full); 1: every sample. Needs a trajectory with an affine readout.
        generator: draws those subsets (its state is saved with the objective's).
        calibration: calibrate the targets on the model before training (the trainer calls
            :meth:`calibrate`); None: use ``constraints`` as given.
        monitor: watches the dual steps for infeasible constraints (default: a window of 20 dual steps).
    """

    constrained = True
    reads_layers = True

    def __init__(
        self,
        constraints: DescentConstraints,
        multipliers: Multipliers,
        per_sample_loss: LossFn | None = squared_error,
        dual_every: int = 1,
        dual_source: str = "train",
        readout_fraction: float = 1.0,
        generator: torch.Generator | None = None,
        calibration: CalibrationConfig | None = None,
        monitor: InfeasibilityMonitor | None = None,
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
        self._slack_count: Tensor | None = None
        self._scale: Tensor | None = None  # f_0..f_{L−1} last seen (relative slacks' gradient weights)
        self.calibration_config = calibration
        self.calibration: Calibration | None = None
        self.monitor = monitor or InfeasibilityMonitor(multipliers.value.numel())

    @property
    def needs_calibration(self) -> bool:
        return self.calibration_config is not None and self.calibration is None

    def calibrate(self, base_losses: Tensor) -> Calibration:
        """Set the targets from the model's layerwise losses ``[L + 1]`` before training
        (:mod:`unrolled.constrained.calibration`); returns what was chosen."""
        if self.calibration_config is None:
            raise ValueError("this objective has no calibration config")
        depth = base_losses.shape[0] - 1
        c = self.calibration_config
        alphas = self.constraints.alphas(depth).tolist()
        result = calibrate(base_losses, alphas, self.constraints.constrained_layers(depth), c.mode, c.margin)
        self._apply(result)
        logger.info(
            "calibrated descent targets: α = %s on layers %s",
            [round(a, 4) for a in result.alphas],
            list(result.layers),
        )
        return result

    def _apply(self, result: Calibration) -> None:
        self.calibration = result
        c = self.constraints
        self.constraints = DescentConstraints(result.alphas, c.detach_previous, result.layers, c.relative)

    def gradient_weights(self, depth: int) -> Tensor:
        """∂(f_L + Σ λ_l s_l)/∂f_l for l = 0..L at the current multipliers: ``[L + 1]``."""
        lam = self.multipliers.value
        if lam.numel() != depth:
            raise ValueError(f"{lam.numel()} multipliers for a trajectory of {depth} layers")
        alpha = self.constraints.alphas(depth, lam)
        if self.constraints.relative:  # s_l / f_{l−1}: each λ_l weighs ∇f_l by 1 / f_{l−1} (the last seen)
            scale = self._scale if self._scale is not None else torch.ones(depth, dtype=lam.dtype)
            lam = lam / scale.abs().clamp_min(1e-12)
        weights = torch.zeros(depth + 1, dtype=lam.dtype)
        weights[1:] += lam
        weights[-1] += 1.0
        if not self.constraints.detach_previous:
            weights[:-1] -= (1 - alpha) * lam
        return weights

    def layer_weights(self, depth: int) -> Tensor:
        return self.gradient_weights(depth)

    def task_weight(self, depth: int) -> float:
        return task_weight(self.gradient_weights(depth))

    def readout_plan(self, depth: int, monitor: bool) -> tuple[list[int], list[int]]:
        """Graph: the layers with a non-zero Lagrangian weight. Values: the targets f_{l−1} of constraints with
        λ_l > 0, and on monitoring batches f_l and f_{l−1} of every constrained layer (a constraint whose λ_l
        is 0 needs its slack only for the dual steps and the logs)."""
        weights = self.gradient_weights(depth)
        lam = self.multipliers.value
        graph = [l for l in range(depth) if weights[l] != 0]
        need: set[int] = set()
        for l in self.constraints.constrained_layers(depth):
            if monitor or lam[l - 1] > 0:
                need |= {l, l - 1}
        need.discard(depth)
        return graph, sorted(need - set(graph))

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
            return read_layers(trajectory, target, weights, self.per_sample_loss, self.recompute_readouts)
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

    def loss(self, trajectory: Trajectory, target: Tensor) -> tuple[Tensor, dict[str, Any]]:
        return self.lagrangian(self.layer_losses(trajectory, target))

    def combine(self, losses: Tensor, observed: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        return self.lagrangian(losses, observed)

    def lagrangian(self, losses: Tensor, observed: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        """f_L + Σ λ_l s_l from layerwise losses ``[L + 1]`` computed by the caller (e.g. a trainer that reads
        the last layer from its own loss); the slacks are kept for the next dual step.

        ``observed`` ``[L + 1]`` (bool) marks the layers the caller read (default: all); a slack is measured
        where both of its layers were. Every constraint with λ_l > 0 must be measured.
        """
        if observed is None:
            slacks, seen = self.constraints.slacks(losses), None
        else:
            observed = observed.to(device=losses.device, dtype=torch.bool)
            slacks = self.constraints.slacks(torch.where(observed, losses, torch.zeros_like(losses)))
            seen = (observed[1:] & observed[:-1]).cpu()
            unread = (self.multipliers.value > 0) & ~seen
            if bool(unread.any()):
                missing = [l + 1 for l in range(seen.numel()) if unread[l]]
                raise ValueError(f"constraints on layers {missing} have λ > 0 but were not read out")
        lagrangian = losses[-1] + (self.multipliers.as_tensor(slacks) * slacks).sum()
        return lagrangian, self._record(losses, slacks, observed, seen)

    def _record(
        self, losses: Tensor, slacks: Tensor, observed: Tensor | None, seen: Tensor | None
    ) -> dict[str, Any]:
        """Keep the slacks ``[L]`` for the next dual step (and f_0..f_{L−1} for relative slacks' weights);
        what to log. ``observed`` ``[L + 1]``, ``seen`` ``[L]``: what was read (None: everything)."""
        if self.constraints.relative:
            seen_f = (
                torch.ones(losses.shape[0] - 1, dtype=torch.bool) if observed is None else observed[:-1].cpu()
            )
            f = losses[:-1].detach().to(torch.float64).cpu()
            self._scale = torch.where(
                seen_f, f, self._scale if self._scale is not None else torch.ones_like(f)
            )
        s = slacks.detach().to(torch.float64).cpu()
        if seen is None:
            ones = torch.ones_like(s)
        else:
            s, ones = torch.where(seen, s, 0.0), seen.to(torch.float64)
        self._slack_sum = s if self._slack_sum is None else self._slack_sum + s
        self._slack_count = ones if self._slack_count is None else self._slack_count + ones
        return {  # one conversion each (not one per layer): bookkeeping should not show in a profile
            "layer_losses": listed(losses, None if observed is None else observed.cpu()),
            "slacks": listed(s, seen),
            "multipliers": self.multipliers.value.tolist(),
            "task_weight": task_weight(self.gradient_weights(s.numel())),
        }

    def step_tensors(self, target: Tensor) -> dict[str, Tensor]:
        """λ ``[L]`` in ``target``'s dtype, and for ``readout_fraction`` < 1 the samples to read ``[B']``."""
        tensors = {"multipliers": self.multipliers.as_tensor(target)}
        pick = subsample(target.shape[0], self.readout_fraction, self.generator)
        if pick is not None:
            tensors["pick"] = pick.to(target.device)
        return tensors

    def weighable(self, depth: int) -> list[bool]:
        """Which of f_0..f_L ``[L + 1]`` the Lagrangian can weigh for some multipliers: f_L, f_l of every
        constrained layer l, and f_{l−1} too unless ``detach_previous``. The others (f_0 and the layers
        below a ``layers`` subset, when detached) only set targets, so their gradient weight is always 0."""
        weigh = [False] * depth + [True]
        for l in self.constraints.constrained_layers(depth):
            weigh[l] = True
            if not self.constraints.detach_previous:
                weigh[l - 1] = True
        return weigh

    def traced_loss(
        self, trajectory: Trajectory, target: Tensor, tensors: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """f_L + Σ λ_l s_l with λ = ``tensors["multipliers"]``: every layer the Lagrangian can weigh
        (:meth:`weighable`, a fact of the constraints, not of λ: the compiled graph does not change with the
        multipliers) read with a graph, the others without one; in Gram form where :meth:`layer_losses` would
        use it, on ``tensors["pick"]`` when subsampling."""
        depth, states = trajectory.depth, trajectory.states
        weigh = self.weighable(depth)
        affine = trajectory.affine_readout if self.per_sample_loss is None else None
        if affine is None:
            if "pick" in tensors:
                raise ValueError(
                    "readout_fraction < 1 needs a trajectory with an affine readout (Trajectory.affine_readout) "
                    "and the trajectory's own loss (per_sample_loss=None)"
                )
            weights = [1.0 if w else 0.0 for w in weigh]
            losses = read_layers(trajectory, target, weights, self.per_sample_loss, recompute=False)
        else:
            terms = affine.terms(target, tensors.get("pick"))
            graph = [l for l in range(depth) if weigh[l]]
            free = [l for l in range(depth) if not weigh[l]]
            read: dict[int, Tensor] = {}
            if free:  # detached rather than under no_grad: the compiler then drops their backward, and
                # Dynamo (torch 2.13) mis-binds a None argument of an autograd.Function called under no_grad
                values = affine.mse([states[l] for l in free], terms).mean(dim=1).detach()
                read.update(zip(free, values, strict=True))
            if graph:
                values = affine.mse([states[l] for l in graph], terms).mean(dim=1)
                read.update(zip(graph, values, strict=True))
            read[depth] = trajectory.sample_losses(states[depth], target).mean()
            losses = torch.stack([read[l] for l in range(depth + 1)])
        slacks = self.constraints.slacks(losses)
        return losses[-1] + (tensors["multipliers"] * slacks).sum(), losses.detach()

    def record(self, losses: Tensor) -> dict[str, Any]:
        return self._record(losses, self.constraints.slacks(losses), None, None)

    def after_step(self, step: int, heldout_slack: Callable[[], Tensor] | None = None) -> dict[str, Any]:
        if step % self.dual_every != 0:
            return {}
        observed = None
        if self.dual_source == "heldout":
            if heldout_slack is None:
                raise ValueError("dual_source 'heldout' needs a held-out constraint batch")
            estimate = heldout_slack().detach().to(torch.float64).cpu()
        else:
            assert self._slack_sum is not None and self._slack_count is not None
            count = self._slack_count
            if bool((count > 0).all()):
                estimate = self._slack_sum / count
            else:  # constraints not read since the last dual step keep their multipliers
                observed = count > 0
                estimate = torch.where(observed, self._slack_sum / count.clamp_min(1.0), 0.0)
        self._slack_sum, self._slack_count = None, None
        value = self.multipliers.step(estimate, observed)
        weight = task_weight(self.gradient_weights(value.numel()))
        self.monitor.update(estimate, value, observed, self.multipliers.steps, weight)
        info: dict[str, Any] = {
            "dual_step": self.multipliers.steps,
            "slack_estimate": listed(estimate, observed),
            "multipliers": value.tolist(),
        }
        if self.monitor.flagged:
            info["infeasible"] = sorted(self.monitor.flagged)
        return info

    def sync_step(self, step: int, total_steps: int) -> None:
        """Fits the infeasibility monitor's window to the run's dual steps (a third of them at most)."""
        if total_steps > 0:
            self.monitor.fit(total_steps // self.dual_every)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.monitor.report(),
            "task_weight": task_weight(self.gradient_weights(self.multipliers.value.numel())),
        }
        if self.calibration is not None:
            out["calibration"] = self.calibration.as_dict()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "multipliers": self.multipliers.state_dict(),
            "slack_sum": self._slack_sum,
            "slack_count": self._slack_count,
            "generator": self.generator.get_state(),
            "monitor": self.monitor.state_dict(),
            "calibration": None if self.calibration is None else self.calibration.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.multipliers.load_state_dict(state["multipliers"])
        self._slack_sum, count = state["slack_sum"], state["slack_count"]
        if isinstance(count, int | float):  # written before slacks were counted per layer
            count = None if self._slack_sum is None else torch.full_like(self._slack_sum, float(count))
        self._slack_count = count
        if "generator" in state:  # checkpoints written before subsampling existed have none
            self.generator.set_state(state["generator"])
        if state.get("monitor") is not None:
            self.monitor.load_state_dict(state["monitor"])
        if state.get("calibration") is not None:
            self._apply(Calibration(**{k: tuple(v) for k, v in state["calibration"].items()}))
