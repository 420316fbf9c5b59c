"""The trajectory: the states of one solver run after steps 0..L, and the readout they share.

Every solver of the library, learned or classical, returns a :class:`Trajectory`. A readout turns any state
into a prediction, so a loss can be read after every step: the *layerwise losses* f_0, ..., f_L that the
Memformer figures plot and the descent constraints of the constrained-learning paper act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from unrolled.constrained.gram import AffineReadout

Readout = Callable[[Tensor], Tensor]
"""Maps one state ``[B, ...]`` to a prediction ``[B, ...]``."""

LossFn = Callable[[Tensor, Tensor], Tensor]
"""Maps (prediction ``[B, ...]``, target ``[B, ...]``) to per-sample losses ``[B]``."""

StateLoss = Callable[[Tensor, Tensor], Tensor]
"""Maps (state ``[B, ...]``, target) to per-sample losses ``[B]`` without materialising the prediction."""


def squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-sample squared error summed over non-batch dimensions.

    Args:
        prediction: ``[B, ...]``.
        target: ``[B, ...]``, same shape.

    Returns:
        ``[B]``: ``sum((prediction - target)**2)`` over every dimension but the first.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    err = (prediction - target) ** 2
    return err.reshape(err.shape[0], -1).sum(dim=1)


@dataclass(frozen=True)
class Trajectory:
    """States ``Z_0, ..., Z_L`` of one batched solver run and the readout shared by all of them.

    Attributes:
        states: ``L + 1`` tensors, each ``[B, ...]``; ``states[0]`` is the input state (step 0).
        readout: the shared readout, state ``[B, ...]`` -> prediction ``[B, ...]``.
        state_loss: optionally, the readout and its loss fused, ``(state, target) -> [B]``, for readouts too
            large to materialise for a whole batch (a logit lens over a vocabulary of 50k-130k tokens):
            losses are then computed chunk by chunk. Layerwise losses and objectives use it when they are
            given no loss of their own.
        affine_readout: optionally, the readout described as affine in a per-token normalised state, with
            :attr:`state_loss` its mean squared error: a constrained objective then reads the intermediate
            layers out in Gram form (:mod:`unrolled.constrained.gram`), at about the cost of one readout.
    """

    states: tuple[Tensor, ...]
    readout: Readout
    state_loss: StateLoss | None = None
    affine_readout: AffineReadout | None = None

    def __post_init__(self) -> None:
        if len(self.states) == 0:
            raise ValueError("a trajectory needs at least the initial state")
        batch = self.states[0].shape[0]
        for l, s in enumerate(self.states):
            if s.shape[0] != batch:
                raise ValueError(f"state {l} has batch size {s.shape[0]}, state 0 has {batch}")

    @property
    def depth(self) -> int:
        """Number of steps L (the trajectory holds L + 1 states)."""
        return len(self.states) - 1

    @property
    def final(self) -> Tensor:
        """The last state ``Z_L`` ``[B, ...]``."""
        return self.states[-1]

    def prediction(self, step: int = -1) -> Tensor:
        """Readout of one state: ``[B, ...]``."""
        return self.readout(self.states[step])

    def predictions(self) -> Tensor:
        """Readouts of every state, stacked: ``[L + 1, B, ...]``."""
        return torch.stack([self.readout(s) for s in self.states])

    def sample_losses(self, state: Tensor, target: Tensor, loss: LossFn | None = None) -> Tensor:
        """Per-sample losses ``[B]`` of one state: ``loss(readout(state), target)``; with no ``loss``, the
        trajectory's own :attr:`state_loss` (or the squared error when it has none)."""
        if loss is None and self.state_loss is not None:
            return self.state_loss(state, target)
        return (loss or squared_error)(self.readout(state), target)

    def layerwise_losses(self, target: Tensor, loss: LossFn | None = None, reduction: str = "mean") -> Tensor:
        """The loss after every step, f_l = loss(readout(Z_l), target).

        Args:
            target: the target of one prediction (``[B, ...]``).
            loss: per-sample loss, ``(prediction, target) -> [B]``; None: the trajectory's own
                :attr:`state_loss`, else the squared error.
            reduction: ``"mean"`` over the batch (returns ``[L + 1]``) or ``"none"`` (``[L + 1, B]``).
        """
        return layerwise_losses(self, target, loss, reduction)


def layerwise_losses(
    trajectory: Trajectory, target: Tensor, loss: LossFn | None = None, reduction: str = "mean"
) -> Tensor:
    """Losses f_0..f_L of a trajectory; ``[L + 1]`` for ``reduction="mean"``, ``[L + 1, B]`` for ``"none"``."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    per_sample = torch.stack([trajectory.sample_losses(s, target, loss) for s in trajectory.states])
    return per_sample.mean(dim=1) if reduction == "mean" else per_sample
