"""The config of layerwise descent constraints and their dual ascent (any solver, any experiment family)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from unrolled.config import Bool, ConfigModel, Float, Int
from unrolled.validation import ConfigError

Alpha = Annotated[Float, Field(ge=0, lt=1)]


class ConstraintConfig(ConfigModel):
    """Layerwise descent constraints E[f_l] ≤ (1 − α_l) E[f_{l−1}] and their dual ascent.

    ``alpha`` is one α for every layer; ``alphas`` (one per layer) overrides it. ``dual_lr`` is η_λ;
    ``resilient_rho`` (> 1) switches to resilient ascent λ ← [(1 − 1/ρ) λ + η_λ s]_+. The dual step runs every
    ``dual_every`` primal steps on the mean slack of the training batches since the last one
    (``dual_source: train``) or on a held-out constraint batch of ``heldout_size`` problems (``heldout``).
    ``detach_previous`` stops gradients through f_{l−1} in the slack (default; see
    :mod:`unrolled.constrained.descent` for why). ``layers`` lists the layers (1..L) that carry a constraint
    (default: all). ``readout_fraction`` < 1 reads the intermediate layers on that share of each batch's
    samples (an unbiased estimate; the last layer in full), for solvers whose trajectory describes its readout
    as affine (:class:`~unrolled.constrained.gram.AffineReadout`: the video denoisers).
    """

    alpha: Alpha = 0.1
    alphas: Annotated[tuple[Alpha, ...], Field(min_length=1)] | None = None
    detach_previous: Bool = True
    dual_lr: Annotated[Float, Field(gt=0)] = 0.1
    resilient_rho: Annotated[Float, Field(gt=1)] | None = None
    dual_every: Annotated[Int, Field(ge=1)] = 1
    dual_source: Literal["train", "heldout"] = "train"
    heldout_size: Annotated[Int, Field(ge=1)] = 1000
    layers: Annotated[tuple[Annotated[Int, Field(ge=1)], ...], Field(min_length=1)] | None = None
    readout_fraction: Annotated[Float, Field(gt=0, le=1)] = 1.0

    def alpha_for(self, depth: int) -> float | tuple[float, ...]:
        """α for a model of ``depth`` layers (the per-layer list must match it)."""
        if self.alphas is None:
            return self.alpha
        if len(self.alphas) != depth:
            raise ConfigError(
                f"constraints.alphas: has {len(self.alphas)} entries, the model has {depth} layers"
            )
        return self.alphas
