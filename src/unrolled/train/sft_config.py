"""The fields of constrained SFT: :class:`ConstrainedSFTConfig` is ``trl.SFTConfig`` plus the layerwise objective.

Kept apart from :mod:`unrolled.train.sft` (which re-exports it beside :class:`ConstrainedSFTTrainer`) so that each
module holds one thing: here the fields, their validation and their translation into the library's
:class:`~unrolled.constrained.config.ConstraintConfig` or :class:`~unrolled.constrained.config.EarlyExitConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from unrolled.constrained.config import ConstraintConfig, EarlyExitConfig
from unrolled.perturb import Perturbation
from unrolled.validation import ConfigError

CONSTRAINT_FIELDS = {
    "alpha": "constraint_alpha",
    "alphas": "constraint_alphas",
    "layers": "constrained_layers",
    "relative": "relative_slack",
    "calibrate.mode": "calibrate",
    "calibrate.batches": "calibration_batches",
    "calibrate.margin": "calibration_margin",
    **{k: k for k in ("dual_lr", "dual_every", "resilient_cost", "multiplier_max", "detach_previous",
                      "infeasibility_window", "task_weight_floor")},
}  # fmt: skip
"""The keys of :class:`ConstraintConfig` -> the fields of :class:`ConstrainedSFTConfig` that set them."""

EARLY_EXIT_FIELDS = {
    "scale": "early_exit_scale",
    "scale_type": "early_exit_scale_type",
    "curriculum": "early_exit_curriculum",
    "gradual_fraction": "early_exit_gradual_fraction",
    "layers": "early_exit_layers",
}
"""The keys of :class:`EarlyExitConfig` -> the fields of :class:`ConstrainedSFTConfig` that set them."""


@dataclass
class ConstrainedSFTConfig(SFTConfig):
    """``SFTConfig`` plus the layerwise objective: descent constraints (default), LayerSkip's early-exit loss,
    or none (``layer_objective="none"`` or ``constraint_alpha=None``: plain SFT)."""

    layer_objective: str = field(
        default="constrained",
        metadata={
            "help": "'constrained' (descent constraints), 'early_exit' (LayerSkip) or 'none' (plain SFT)."
        },
    )
    constraint_alpha: float | None = field(
        default=0.01, metadata={"help": "α of every constraint f_l <= (1 - α) f_(l-1); None: plain SFT."}
    )
    constraint_alphas: list[float] | None = field(
        default=None, metadata={"help": "One α per layer (overrides; negative: the layer may rise by -α)."}
    )
    constrained_layers: list[int] | None = field(
        default=None, metadata={"help": "The layers (1..L) that carry a constraint; default all."}
    )
    dual_lr: float = field(default=2.0, metadata={"help": "Dual step size η_λ."})
    dual_every: int = field(default=5, metadata={"help": "Optimizer steps between dual steps."})
    resilient_cost: float | None = field(
        default=None, metadata={"help": "Resilient relaxation's cost c (λ settles at c·s; None: none)."}
    )
    multiplier_max: float | None = field(
        default=1.0, metadata={"help": "Upper bound λ_max of every multiplier (None: unbounded)."}
    )
    calibrate: str | None = field(
        default=None,
        metadata={"help": "Targets from the model before training: 'relax' or 'drop' (None: off)."},
    )
    calibration_batches: int = field(default=4, metadata={"help": "Training batches calibration reads."})
    calibration_margin: float = field(
        default=0.0, metadata={"help": "Calibration's extra room (share of f_(l-1))."}
    )
    relative_slack: bool = field(
        default=True, metadata={"help": "Measure each slack relative to the layer before: s_l / f_(l-1)."}
    )
    infeasibility_window: int = field(
        default=20,
        metadata={
            "help": "Dual steps with a positive slack that flag a constraint as infeasible (at most a "
            "third of the run's dual steps)."
        },
    )
    task_weight_floor: float = field(
        default=0.25,
        metadata={
            "help": "Warn when the task's share of the loss, 1 / (1 + sum of multipliers), falls below it."
        },
    )
    resilient_rho: float | None = field(
        default=None, metadata={"help": "Removed: use resilient_cost (c = resilient_rho × dual_lr)."}
    )
    early_exit_scale: float = field(
        default=1.0, metadata={"help": "Early exit: e_scale of the non-final layers."}
    )
    early_exit_scale_type: str = field(
        default="sum_l", metadata={"help": "Early exit: one, l, sum_l, inv_l, sqrt_l or inv_sqrt_l."}
    )
    early_exit_curriculum: str = field(
        default="none", metadata={"help": "Early exit: none, rotational or gradual."}
    )
    early_exit_gradual_fraction: float = field(
        default=0.5,
        metadata={"help": "Early exit: share of the run after which the gradual curriculum is done."},
    )
    early_exit_layers: list[int] | None = field(
        default=None, metadata={"help": "Early exit: the exits (1..L; default all)."}
    )
    detach_previous: bool = field(default=False, metadata={"help": "Stop gradients through f_(l-1) in s_l."})
    readout_token_fraction: float = field(
        default=0.25, metadata={"help": "Share of trained tokens the intermediate layers are read out on."}
    )
    readout_chunk_tokens: int = field(default=1024, metadata={"help": "Tokens per chunk of the logit lens."})
    embedding_noise: str | None = field(
        default=None, metadata={"help": "Train-time noise on the token embeddings: 'gaussian' or 'uniform'."}
    )
    embedding_noise_gamma: float = field(default=0.0, metadata={"help": "Its level γ."})
    embedding_noise_sigma: float | None = field(
        default=None, metadata={"help": "σ of the Gaussian noise (None: each batch's own std)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resilient_rho is not None:
            raise ValueError(
                "resilient_rho was replaced by resilient_cost, the relaxation's cost c, which does not change "
                f"with the dual lr; resilient_cost = resilient_rho × dual_lr = {self.resilient_rho * self.dual_lr:g} "
                "gives the same update"
            )
        if self.layer_objective not in ("constrained", "early_exit", "none"):
            raise ValueError(
                f"layer_objective must be 'constrained', 'early_exit' or 'none', got {self.layer_objective!r}"
            )
        if not 0 < self.readout_token_fraction <= 1:
            raise ValueError(f"readout_token_fraction must be in (0, 1], got {self.readout_token_fraction}")
        if self.embedding_noise not in (None, "gaussian", "uniform"):
            raise ValueError(
                f"embedding_noise must be 'gaussian', 'uniform' or None, got {self.embedding_noise!r}"
            )
        self.objective_config()  # validate the objective's fields now, with their names

    def objective_config(self) -> ConstraintConfig | EarlyExitConfig | None:
        """The library's config of the layerwise objective these fields describe (None: plain SFT).

        Raises:
            ConfigError: naming the field of this config the user set (``constraint_alpha``, not ``alpha``).
        """
        try:
            return self._objective_config()
        except ConfigError as exc:
            raise self.user_error(exc) from None

    def user_error(self, exc: ConfigError) -> ConfigError:
        """``exc`` (about a key of the library's objective configs) in the words of this config's fields."""
        import re

        names = EARLY_EXIT_FIELDS if self.layer_objective == "early_exit" else CONSTRAINT_FIELDS
        key = exc.key or ""
        index = re.search(r"\[\d+\]$", key.split(".")[0])  # alphas[0] -> constraint_alphas[0]
        parts = re.sub(r"\[\d+\]", "", key).split(".")
        head = ".".join(parts[:2]) if ".".join(parts[:2]) in names else parts[0]
        field_name = names.get(head, key) + (index.group(0) if index and head in names else "")
        return ConfigError(
            f"ConstrainedSFTConfig.{field_name}: {exc.reason}", key=field_name, reason=exc.reason
        )

    def _objective_config(self) -> ConstraintConfig | EarlyExitConfig | None:
        from unrolled.config import from_dict

        if self.layer_objective == "none":
            return None
        if self.layer_objective == "early_exit":
            return from_dict(
                EarlyExitConfig,
                {
                    "scale": self.early_exit_scale,
                    "scale_type": self.early_exit_scale_type,
                    "curriculum": self.early_exit_curriculum,
                    "gradual_fraction": self.early_exit_gradual_fraction,
                    "layers": self.early_exit_layers,
                },
            )
        if self.constraint_alpha is None and self.constraint_alphas is None:
            return None
        calibration = None
        if self.calibrate is not None:
            calibration = {
                "mode": self.calibrate,
                "batches": self.calibration_batches,
                "margin": self.calibration_margin,
            }
        return from_dict(
            ConstraintConfig,
            {
                "alpha": 0.0 if self.constraint_alpha is None else self.constraint_alpha,
                "alphas": self.constraint_alphas,
                "layers": self.constrained_layers,
                "dual_lr": self.dual_lr,
                "dual_every": self.dual_every,
                "resilient_cost": self.resilient_cost,
                "multiplier_max": self.multiplier_max,
                "calibrate": calibration,
                "detach_previous": self.detach_previous,
                "infeasibility_window": self.infeasibility_window,
                "task_weight_floor": self.task_weight_floor,
                "relative": self.relative_slack,
            },
        )

    def constraint_config(self) -> ConstraintConfig | None:
        """The :class:`ConstraintConfig` of these fields (None unless the objective is constrained)."""
        config = self.objective_config()
        return config if isinstance(config, ConstraintConfig) else None

    def train_noise(self) -> Perturbation | None:
        if self.embedding_noise is None or self.embedding_noise_gamma == 0:
            return None
        return Perturbation(self.embedding_noise, self.embedding_noise_gamma, 0.0, self.embedding_noise_sigma)  # type: ignore[arg-type]
