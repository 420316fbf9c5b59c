"""LayerSkip's early-exit loss (Elhoushi et al. 2024, arXiv 2404.16710): fixed per-layer weights on the shared
readout, the baseline an LLM user would otherwise reach for.

Where the constrained objective *learns* how much each layer's loss should weigh (the multipliers), the
early-exit loss fixes the weights in advance:

    L = Σ_{l ∈ E(t)} w_l f_l,   w_l = ẽ_l · (e_scale if l < L else 1) / Σ_{k ∈ E(t)} ẽ_k · (e_scale if k < L else 1)

with f_l the loss of the shared readout on layer l (l = 1..L; the embedding, f_0, is not an exit), E(t) the
layers the curriculum has switched on at step t (the last layer always), and ẽ_l a scale that depends on the
depth l:

=============  ===========================================================
``one``        1
``l``          l
``sum_l``      the cumulative sum of k over the enabled layers k ≤ l
``inv_l``      1 / l
``sqrt_l``     √l
``inv_sqrt_l`` 1 / √l
=============  ===========================================================

The weights sum to 1: the loss is a weighted mean of the layers' losses, and the last layer's weight is
the task's share. Curricula (torchtune's ``early_exit_loss`` module, read for its exact conventions):

- ``none``: every layer of ``layers`` at every step.
- ``rotational``: the enabled set is ``layers`` rotated by one layer per optimizer step (with every layer
  enabled, rotation changes nothing; it matters for a sparse set such as every fourth layer).
- ``gradual``: layers switch on from the last down: layer l is on from step t when t / T ≥
  ``gradual_fraction`` · (L − l + 1) / L (T: the run's optimizer steps), so every layer is on after
  ``gradual_fraction`` of the run.

LayerSkip pairs this loss with layer dropout; that changes the model, not the objective, and is not part of
this class. torchtune's defaults are ``scale: 1.0``, ``scale_type: sum_l``, ``curriculum: none``; LayerSkip's
fine-tuning setting (TOPv2) is ``scale_type: l``, ``curriculum: gradual``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from unrolled.constrained.config import EarlyExitConfig
from unrolled.constrained.objective import Objective, read_layers
from unrolled.trajectory import LossFn, Trajectory, squared_error


def early_exit_scales(layers: list[int], depth: int, scale_type: str, e_scale: float) -> list[float]:
    """The normalised weights w_l of the enabled ``layers`` (1..L, ascending) of a ``depth``-layer model."""
    if scale_type == "one":
        raw = [1.0 for _ in layers]
    elif scale_type == "l":
        raw = [float(l) for l in layers]
    elif scale_type == "sum_l":
        raw, running = [], 0.0
        for l in layers:
            running += l
            raw.append(running)
    elif scale_type == "inv_l":
        raw = [1.0 / l for l in layers]
    elif scale_type == "sqrt_l":
        raw = [math.sqrt(l) for l in layers]
    elif scale_type == "inv_sqrt_l":
        raw = [1.0 / math.sqrt(l) for l in layers]
    else:
        raise ValueError(f"unknown early-exit scale_type {scale_type!r}")
    scaled = [r * (e_scale if l < depth else 1.0) for r, l in zip(raw, layers, strict=True)]
    total = sum(scaled)
    return [s / total for s in scaled]


class EarlyExitObjective(Objective):
    """Σ_l w_l f_l with LayerSkip's fixed, curriculum-scheduled weights (module docstring).

    Args:
        config: scale, scale type, curriculum and the exits.
        depth: the model's number of layers L.
        total_steps: optimizer steps of the run (the gradual curriculum's T).
        per_sample_loss: ``(prediction, target) -> [B]``; None: the trajectory's own ``state_loss``.
    """

    reads_layers = True

    def __init__(
        self,
        config: EarlyExitConfig,
        depth: int,
        total_steps: int = 1,
        per_sample_loss: LossFn | None = squared_error,
    ) -> None:
        super().__init__(per_sample_loss)
        if config.layers is not None and max(config.layers) > depth:
            raise ValueError(f"early_exit.layers {list(config.layers)} for a model of {depth} layers")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.config, self.depth, self.total_steps = config, depth, total_steps
        self.exits = sorted(set(config.layers or range(1, depth + 1)) | {depth})
        self.step = 0  # optimizer steps taken

    def enabled(self, step: int | None = None) -> list[int]:
        """The layers (1..L) whose loss enters the objective at optimizer step ``step`` (default: now)."""
        t = self.step if step is None else step
        c, L = self.config, self.depth
        if c.curriculum == "rotational":
            mask = [l in self.exits for l in range(1, L + 1)]
            shift = t % L
            rolled = mask[-shift:] + mask[:-shift] if shift else mask
            on = [l for l, m in zip(range(1, L + 1), rolled, strict=True) if m]
        elif c.curriculum == "gradual":
            on = [l for l in self.exits if t / self.total_steps >= c.gradual_fraction * (L - l + 1) / L]
        else:
            on = list(self.exits)
        return sorted(set(on) | {L})

    def layer_weights(self, depth: int) -> Tensor:
        if depth != self.depth:
            raise ValueError(f"an early-exit objective for {self.depth} layers got a trajectory of {depth}")
        on = self.enabled()
        weights = torch.zeros(depth + 1, dtype=torch.float64)
        for l, w in zip(
            on, early_exit_scales(on, depth, self.config.scale_type, self.config.scale), strict=True
        ):
            weights[l] = w
        return weights

    def task_weight(self, depth: int) -> float:
        return float(self.layer_weights(depth)[-1])

    def readout_plan(self, depth: int, monitor: bool) -> tuple[list[int], list[int]]:
        weights = self.layer_weights(depth)
        graph = [l for l in range(depth) if weights[l] != 0]
        values = [l for l in range(depth) if l not in graph] if monitor else []
        return graph, values

    def combine(self, losses: Tensor, observed: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        depth = losses.shape[0] - 1
        weights = self.layer_weights(depth)
        used = weights != 0
        if observed is not None and bool((used & ~observed.cpu()).any()):
            missing = [l for l in range(depth + 1) if used[l] and not observed[l]]
            raise ValueError(f"the early-exit loss needs layers {missing}, which were not read out")
        terms = losses[used.to(losses.device)]
        loss = (weights[used].to(terms) * terms).sum()
        values = losses.detach().double().cpu()
        if observed is not None:
            values = torch.where(observed.cpu(), values, torch.nan)
        info = {
            "layer_losses": [None if math.isnan(v) else v for v in values.tolist()],
            "exit_weights": weights.tolist(),
            "task_weight": float(weights[-1]),
        }
        return loss, info

    def step_tensors(self, target: Tensor) -> dict[str, Tensor]:
        """The weights w_0..w_L ``[L + 1]`` at this step (the curriculum changes them: data, not constants)."""
        return {"weights": self.layer_weights(self.depth).to(device=target.device, dtype=target.dtype)}

    def traced_loss(
        self, trajectory: Trajectory, target: Tensor, tensors: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Σ_l w_l f_l with every layer read with a graph (the curriculum's switched-off ones weigh 0)."""
        losses = trajectory.layerwise_losses(target, self.per_sample_loss)
        return (tensors["weights"].to(losses.dtype) * losses).sum(), losses.detach()

    def record(self, losses: Tensor) -> dict[str, Any]:
        weights = self.layer_weights(losses.shape[0] - 1)
        return {
            "layer_losses": losses.double().cpu().tolist(),
            "exit_weights": weights.tolist(),
            "task_weight": float(weights[-1]),
        }

    def loss(self, trajectory: Trajectory, target: Tensor) -> tuple[Tensor, dict[str, Any]]:
        weights = self.layer_weights(trajectory.depth).tolist()
        losses = read_layers(trajectory, target, weights, self.per_sample_loss, self.recompute_readouts)
        return self.combine(losses)

    def after_step(self, step: int, heldout_slack: Callable[[], Tensor] | None = None) -> dict[str, Any]:
        self.step = step
        return {}

    def sync_step(self, step: int, total_steps: int) -> None:
        self.step = step
        if total_steps > 0:
            self.total_steps = total_steps

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
