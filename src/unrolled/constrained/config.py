"""The configs of layerwise training objectives beyond ERM (any solver, any experiment family): descent
constraints with their dual ascent and remedies for infeasible constraints, and LayerSkip's early-exit loss."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from unrolled.config import Bool, ConfigModel, Float, Int
from unrolled.validation import ConfigError, check

Alpha = Annotated[Float, Field(ge=0, lt=1)]
LayerAlpha = Annotated[Float, Field(lt=1)]
Layers = Annotated[tuple[Annotated[Int, Field(ge=1)], ...], Field(min_length=1)]


class CalibrationConfig(ConfigModel):
    """Targets calibrated on the model before training, so that every constraint holds at the start.

    Before the first step, the model (pretrained, untrained by this run) is read out on ``batches`` training
    batches (with the training noise), giving its own relative descent r_l = 1 − f_l / f_{l−1} at every
    layer. Then, for each constrained layer:

    - ``mode: relax``: α_l = min(α, r_l − ``margin``). A layer that already descends by α keeps α; one that
      descends less, or goes up, may not do worse than it does now (minus the margin): α_l < 0 means
      "may rise by at most −α_l". Every constraint starts feasible.
    - ``mode: drop``: keep α on the layers where r_l ≥ α + ``margin`` and drop the constraints of the others.

    The calibrated α_l (and layers) are saved with the multipliers and restored on resume.
    """

    mode: Literal["relax", "drop"] = "relax"
    batches: Annotated[Int, Field(ge=1)] = 4
    margin: Annotated[Float, Field(ge=0, lt=1)] = 0.0


class ConstraintConfig(ConfigModel):
    """Layerwise descent constraints E[f_l] ≤ (1 − α_l) E[f_{l−1}] and their dual ascent.

    ``alpha`` is one α for every layer; ``alphas`` (one per layer) overrides it (a negative α_l lets layer l
    rise by at most −α_l). ``dual_lr`` is η_λ. The dual step runs every ``dual_every`` primal steps on the
    mean slack of the training batches since the last one (``dual_source: train``) or on a held-out
    constraint batch of ``heldout_size`` problems (``heldout``). ``detach_previous`` stops gradients through
    f_{l−1} in the slack (default; see :mod:`unrolled.constrained.descent` for why). ``layers`` lists the
    layers (1..L) that carry a constraint (default: all). ``readout_fraction`` < 1 reads the intermediate
    layers on that share of each batch's samples (an unbiased estimate; the last layer in full), for solvers
    whose trajectory describes its readout as affine (:class:`~unrolled.constrained.gram.AffineReadout`: the
    video denoisers).

    Remedies for constraints the model cannot meet (docs/CONSTRAINTS.md):

    - ``multiplier_max``: λ_l ∈ [0, λ_max], the dual of the L1-relaxed ("elastic") constraint.
    - ``resilient_cost``: c > 0, resilient relaxation at the cost c u² / 2 (Hounie et al. 2023):
      λ ← [(1 − η_λ / c) λ + η_λ s]_+, which settles at λ = c · s whatever η_λ (needs η_λ < 2c).
    - ``calibrate``: per-layer targets from the model itself before training
      (:class:`CalibrationConfig`).

    - ``relative``: slacks measured relative to the layer before, s_l / f_{l−1}: the same constraints, with
      multipliers whose steps and weights do not grow with the size of a layer's loss.

    ``infeasibility_window``: dual steps over which a constraint whose slack stayed positive is reported
    as infeasible (:mod:`unrolled.constrained.infeasibility`; at most a third of the run's dual steps, and
    never fewer than 10: a run with fewer dual steps gets no verdict, and its report says it was too short).
    ``task_weight_floor``: a warning when the task's share of the loss, 1 / (1 + Σλ) with f_{l−1} detached,
    falls below it (0: never).
    """

    alpha: Alpha = 0.1
    alphas: Annotated[tuple[LayerAlpha, ...], Field(min_length=1)] | None = None
    detach_previous: Bool = True
    dual_lr: Annotated[Float, Field(gt=0)] = 0.1
    resilient_cost: Annotated[Float, Field(gt=0)] | None = None
    multiplier_max: Annotated[Float, Field(gt=0)] | None = None
    calibrate: CalibrationConfig | None = None
    relative: Bool = False
    dual_every: Annotated[Int, Field(ge=1)] = 1
    dual_source: Literal["train", "heldout"] = "train"
    heldout_size: Annotated[Int, Field(ge=1)] = 1000
    layers: Layers | None = None
    readout_fraction: Annotated[Float, Field(gt=0, le=1)] = 1.0
    infeasibility_window: Annotated[Int, Field(ge=2)] = 20
    task_weight_floor: Annotated[Float, Field(ge=0, lt=1)] = 0.25

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "resilient_rho" in data:
            rho, lr = data["resilient_rho"], data.get("dual_lr", 0.1)
            hint = ""
            if isinstance(rho, int | float) and isinstance(lr, int | float):
                hint = f" (here {float(rho) * float(lr):g})"
            check(
                False,
                "resilient_rho",
                "was replaced by resilient_cost, the relaxation's cost c, which does not change with the dual "
                f"lr; c = resilient_rho × dual_lr gives the same update{hint}",
            )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ConstraintConfig:
        if self.resilient_cost is not None:
            check(
                self.dual_lr < 2 * self.resilient_cost,
                "resilient_cost",
                f"resilient ascent diverges unless dual_lr < 2 × resilient_cost: raise it above "
                f"{self.dual_lr / 2:g} or lower dual_lr",
            )
        return self

    def check_depth(self, depth: int) -> None:
        """Raise :class:`ConfigError` (key ``layers`` or ``alphas``) unless these constraints fit a model of
        ``depth`` layers: every constrained layer in 1..L, one α per layer."""
        _check_layers(self.layers, depth)
        if self.alphas is not None:
            check(
                len(self.alphas) == depth,
                "alphas",
                f"has {len(self.alphas)} entries, the model has {depth} layers (one α per layer)",
            )

    def alpha_for(self, depth: int) -> float | tuple[float, ...]:
        """α for a model of ``depth`` layers (the per-layer list must match it)."""
        if self.alphas is None:
            return self.alpha
        if len(self.alphas) != depth:
            raise ConfigError(
                f"constraints.alphas: has {len(self.alphas)} entries, the model has {depth} layers"
            )
        return self.alphas

    @property
    def multiplier_kind(self) -> str:
        """How the multipliers move: ``resilient``, ``bounded`` or ``projected``."""
        if self.resilient_cost is not None:
            return "resilient"
        return "bounded" if self.multiplier_max is not None else "projected"


def _check_layers(layers: tuple[int, ...] | None, depth: int) -> None:
    bad = sorted(l for l in layers or () if l > depth)
    check(
        not bad,
        "layers",
        f"layer{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of a model with {depth} layers "
        f"(layers are numbered 1..{depth})",
    )


class EarlyExitConfig(ConfigModel):
    """LayerSkip's early-exit loss (Elhoushi et al. 2024; torchtune's ``early_exit_loss``): Σ_l w_l f_l with
    fixed weights that sum to 1 (:mod:`unrolled.constrained.early_exit`).

    ``scale`` (e_scale) multiplies the raw scale of every layer but the last; ``scale_type`` sets how the raw
    scale grows with depth; ``curriculum`` switches exits on over training (``gradual``: from the last layer
    down, all on after ``gradual_fraction`` of the run) or rotates them (``rotational``); ``layers`` are the
    exits (1..L; default all; the last layer is always one).
    """

    scale: Annotated[Float, Field(gt=0)] = 1.0
    scale_type: Literal["one", "l", "sum_l", "inv_l", "sqrt_l", "inv_sqrt_l"] = "sum_l"
    curriculum: Literal["none", "rotational", "gradual"] = "none"
    gradual_fraction: Annotated[Float, Field(gt=0, le=1)] = 0.5
    layers: Layers | None = None

    def check_depth(self, depth: int) -> None:
        """Raise :class:`ConfigError` (key ``layers``) unless every exit is a layer of a ``depth``-layer model."""
        _check_layers(self.layers, depth)
