"""Descent targets calibrated on the model before training (the audit as the first step of constraining).

A pretrained model does not descend layer by layer under its own readout: SmolLM2-135M's logit lens reads
its layers 2–11 *worse* than layer 1 (docs/REPRODUCTION.md, the audit). Constraints that ask those layers to
descend by α are infeasible from the first step, and their multipliers grow for the whole run. Calibrating
reads the model's own relative descent r_l = 1 − f_l / f_{l−1} on a few training batches before it trains,
and sets targets the model meets at the start (:class:`~unrolled.constrained.config.CalibrationConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Calibration:
    """What calibration found and chose.

    Attributes:
        base_losses: f_0..f_L of the model before training (mean over the calibration batches).
        descent: r_l = 1 − f_l / f_{l−1}, l = 1..L (None where f_{l−1} ≤ 0).
        alphas: the calibrated α_1..α_L.
        layers: the constrained layers after calibration.
    """

    base_losses: tuple[float, ...]
    descent: tuple[float | None, ...]
    alphas: tuple[float, ...]
    layers: tuple[int, ...]

    def as_dict(self) -> dict[str, list]:
        return {k: list(v) for k, v in self.__dict__.items()}


def calibrate(
    base_losses: Tensor, alphas: list[float], layers: list[int], mode: str = "relax", margin: float = 0.0
) -> Calibration:
    """Per-layer targets from the model's own layerwise losses ``[L + 1]`` before training.

    Args:
        base_losses: f_0..f_L.
        alphas: the requested α_1..α_L.
        layers: the constrained layers (1..L).
        mode: ``relax`` (α_l = min(α_l, r_l − margin) on every constrained layer) or ``drop`` (keep the
            layers where r_l ≥ α_l + margin, unchanged, and drop the others).
        margin: extra room, as a share of f_{l−1}.

    Returns:
        The :class:`Calibration`; with it, every remaining constraint holds on the calibration batches by at
        least ``margin`` · f_{l−1}.
    """
    f = [float(v) for v in base_losses.detach().double().cpu()]
    depth = len(f) - 1
    if len(alphas) != depth:
        raise ValueError(f"{len(alphas)} alphas for {depth} layers")
    if mode not in ("relax", "drop"):
        raise ValueError(f"calibration mode must be 'relax' or 'drop', got {mode!r}")
    descent = [1.0 - f[l] / f[l - 1] if f[l - 1] > 0 else None for l in range(1, depth + 1)]
    new_alphas, kept = list(alphas), []
    for l in sorted(layers):
        r = descent[l - 1]
        if mode == "relax":
            if r is not None:
                new_alphas[l - 1] = min(alphas[l - 1], r - margin)
            kept.append(l)
        elif r is not None and r >= alphas[l - 1] + margin:
            kept.append(l)
    return Calibration(tuple(f), tuple(descent), tuple(new_alphas), tuple(kept))
