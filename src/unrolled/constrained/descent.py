"""Layerwise descent constraints (Porras-Valenzuela, Hadou & Ribeiro, arXiv 2601.17257).

A solver's trajectory gives layerwise losses f_0, ..., f_L (read out through one shared readout). The
constrained problem asks every layer to descend:

    minimise  E[f_L]   subject to   E[f_l] ≤ (1 − α_l) E[f_{l−1}],   l = 1..L,   α_l < 1.

The paper takes 0 ≤ α_l < 1 (α = 0: "no layer goes up"). A negative α_l, which targets calibrated on a
pretrained model produce (:mod:`unrolled.constrained.calibration`), lets layer l rise by at most −α_l.

Its slacks are s_l = f_l − (1 − α_l) f_{l−1} (≤ 0 when the constraint holds) and its empirical Lagrangian is
f_L + Σ_l λ_l s_l with multipliers λ_l ≥ 0 (see :mod:`unrolled.constrained.multipliers`).

``detach_previous`` (default True) stops the gradient through f_{l−1} inside s_l. The exact Lagrangian
gradient contains −λ_l (1 − α_l) ∇f_{l−1}: it rewards *raising* the loss of the layer before, so a model can
satisfy constraint l by making layer l−1 worse (for l = 1, by degrading its input representation). Detached,
each constraint only pushes layer l below a target set by layer l−1, which is what "descend layer by layer"
means. The group's earlier code did not detach; ``detach_previous: false`` gives that behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DescentConstraints:
    """E[f_l] ≤ (1 − α_l) E[f_{l−1}] for l = 1..L.

    Attributes:
        alpha: one α for every layer, in [0, 1), or one per layer (length L), each below 1 (negative: the layer
            may rise by at most −α_l).
        detach_previous: stop gradients through f_{l−1} in the slack (see the module docstring).
        layers: the layers l (1..L) that carry a constraint; None: all; empty: none. The others' slacks are
            0, so their multipliers stay 0 and they add nothing to the Lagrangian.
        relative: measure each slack relative to the layer before, s_l / f_{l−1} (f_{l−1} detached): the same
            constraints, but slacks (and so the multipliers' steps and weights) no longer scale with the size
            of the layers' losses, which differ tenfold along a pretrained LM's logit lens.
    """

    alpha: float | Sequence[float] = 0.1
    detach_previous: bool = True
    layers: Sequence[int] | None = None
    relative: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.alpha, int | float):
            if not 0 <= self.alpha < 1:
                raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        elif not list(self.alpha) or any(not a < 1 for a in self.alpha):
            raise ValueError(f"per-layer alphas must each be below 1, got {self.alpha}")
        if self.layers is not None and any(l < 1 for l in self.layers):
            raise ValueError(f"layers are the constrained layers 1..L, got {self.layers}")

    def alphas(self, depth: int, like: Tensor | None = None) -> Tensor:
        """α_1..α_L as a tensor ``[L]`` (dtype/device of ``like``)."""
        if isinstance(self.alpha, int | float):
            values = [float(self.alpha)] * depth
        else:
            values = [float(a) for a in self.alpha]
            if len(values) != depth:
                raise ValueError(f"alpha has {len(values)} entries but the trajectory has {depth} layers")
        kwargs = {"dtype": like.dtype, "device": like.device} if like is not None else {}
        return torch.tensor(values, **kwargs)

    def slacks(self, layer_losses: Tensor) -> Tensor:
        """s_l = f_l − (1 − α_l) f_{l−1} for l = 1..L (divided by f_{l−1} when ``relative``), from losses
        ``[L + 1]`` (or ``[L + 1, ...]``): ``[L]``."""
        if layer_losses.dim() == 0 or layer_losses.shape[0] < 2:
            raise ValueError(
                f"need layerwise losses f_0..f_L with L >= 1, got shape {tuple(layer_losses.shape)}"
            )
        depth = layer_losses.shape[0] - 1
        alpha = self.alphas(depth, layer_losses).reshape(depth, *([1] * (layer_losses.dim() - 1)))
        previous = layer_losses[:-1].detach() if self.detach_previous else layer_losses[:-1]
        slacks = layer_losses[1:] - (1 - alpha) * previous
        if self.relative:
            slacks = slacks / layer_losses[:-1].detach().abs().clamp_min(1e-12)
        if self.layers is None:
            return slacks
        if self.layers and max(self.layers) > depth:
            raise ValueError(f"constrained layers {list(self.layers)} for a trajectory of {depth} layers")
        keep = torch.zeros(depth, dtype=slacks.dtype, device=slacks.device)
        if self.layers:
            keep[[l - 1 for l in self.layers]] = 1
        return slacks * keep.reshape(depth, *([1] * (slacks.dim() - 1)))

    def constrained_layers(self, depth: int) -> list[int]:
        """The layers (1..L) that carry a constraint."""
        return list(range(1, depth + 1)) if self.layers is None else sorted(self.layers)

    def lagrangian(self, layer_losses: Tensor, multipliers: Tensor) -> Tensor:
        """f_L + Σ_l λ_l s_l (a scalar); the multipliers are treated as constants for the primal step."""
        slacks = self.slacks(layer_losses)
        if multipliers.shape != slacks.shape:
            raise ValueError(f"{tuple(multipliers.shape)} multipliers for {tuple(slacks.shape)} constraints")
        return layer_losses[-1] + (multipliers.detach() * slacks).sum()


def violation_share(layer_losses: Tensor, alpha: float | Sequence[float] = 0.0) -> float:
    """The fraction of layers l = 1..L whose loss does not descend: f_l > (1 − α_l) f_{l−1}.

    With α = 0 this is the share of layers where the loss goes up.
    """
    slacks = DescentConstraints(alpha).slacks(layer_losses.detach())
    return float((slacks > 0).float().mean())
