"""Constrained supervised fine-tuning of causal LMs, in TRL's conventions.

:class:`ConstrainedSFTConfig` is ``trl.SFTConfig`` plus the constraint fields; :class:`ConstrainedSFTTrainer`
is ``trl.SFTTrainer`` with ``compute_loss`` overridden. A TRL user swaps the two classes in an existing script:

    trainer = ConstrainedSFTTrainer(model=model, args=ConstrainedSFTConfig(...), train_dataset=dataset,
                                    peft_config=lora)

The defaults are the recipe issue 17's SFT study measured to keep the pretrained model best (docs/CONSTRAINTS.md,
section 6): α = 0.01 on every layer, slacks relative to the layer before, f_{l−1} left in the graph, λ ≤ 1,
a dual step of η_λ = 2 every 5 optimizer steps, intermediate layers read on a quarter of the trained tokens.

The loss is SFTTrainer's own (the last layer, TRL's masks and normalisation, its metrics) plus Σ λ_l s_l, with
s_l = f_l − (1 − α_l) f_{l−1} and f_l the token cross-entropy of layer l read out by the logit lens (the final
norm and LM head on every layer) on the tokens SFT trains on. The intermediate states are taken by forward
hooks during TRL's own forward, so the last layer is exactly SFTTrainer's, and with every λ at 0 so is the
gradient. Intermediate readouts are chunked and recomputed in backward (no ``[L, B, T, V]``), and may be
read on a random ``readout_token_fraction`` of the trained tokens (an unbiased estimate; the last layer is
always read on all of them). The constraints, multipliers, dual steps, logs and checkpoints are those of
:class:`~unrolled.train.hf.ConstrainedTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from trl import SFTConfig, SFTTrainer

from unrolled.constrained.config import ConstraintConfig, EarlyExitConfig
from unrolled.models.hf import decoder_layers, logit_lens
from unrolled.perturb import Perturbation
from unrolled.seeding import derive_seed
from unrolled.train.hf import ConstraintsMixin
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


def _language_model(model: nn.Module) -> Any:
    """The causal LM inside DDP, FSDP or PEFT wrappers (its layers are the wrapped model's own modules)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class ConstrainedSFTTrainer(ConstraintsMixin, SFTTrainer):
    """``SFTTrainer`` whose loss adds Σ λ_l s_l over the logit-lens losses of every layer (module docstring)."""

    args: ConstrainedSFTConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.args
        if not isinstance(config, ConstrainedSFTConfig):
            raise TypeError(
                f"ConstrainedSFTTrainer needs a ConstrainedSFTConfig, got {type(config).__name__}"
            )
        lm = _language_model(self.model)
        depth = lm.config.num_hidden_layers
        try:  # checked against the model now, in the fields' own names, not at the first step
            self._setup_constraints(
                config.objective_config(),
                depth,
                None,
                None,
                config.train_noise(),
                derive_seed(config.seed, "noise"),
            )
        except ConfigError as exc:
            raise config.user_error(exc) from None
        self.lens = logit_lens(lm, config.readout_chunk_tokens)
        self._layers = decoder_layers(lm)

    def _capture(self, states: list[Tensor]) -> list[Any]:
        """Hooks that collect state 0 (the input of layer 1) and the outputs of layers 1..L−1."""
        handles = [
            self._layers[0].register_forward_pre_hook(
                lambda _m, args, kwargs: states.append(args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True,
            )
        ]
        for layer in self._layers[:-1]:
            handles.append(
                layer.register_forward_hook(
                    lambda _m, _a, out: states.append(out[0] if isinstance(out, tuple) else out)
                )
            )
        return handles

    def _monitoring(self) -> bool:
        """Whether this micro-batch's step is one that a dual step or a log is measured on."""
        step, args = self.state.global_step + 1, self.args
        dual_every = getattr(self.objective, "dual_every", None)
        if dual_every is not None and step % dual_every == 0:
            return True
        every = args.logging_steps
        return (every > 0 and step % int(every) == 0) or (step == 1 and args.logging_first_step)

    def _read(
        self, states: list[Tensor], labels: Tensor, last: Tensor, training: bool
    ) -> tuple[Tensor, Tensor]:
        """f_0..f_L ``[L + 1]`` (NaN where not read) and which were read, as the objective's plan asks."""
        if training:
            graph, values = self.objective.readout_plan(self.depth, self._monitoring())
            fraction = self.args.readout_token_fraction
        else:  # evaluation: every layer, on every token
            graph, values, fraction = list(range(self.depth)), [], 1.0
        # a new subset of tokens for every micro-batch, reproducibly (and the same after a resume)
        step = self.state.global_step
        self._draws = self._draws + 1 if getattr(self, "_draw_step", None) == step else 0
        self._draw_step = step
        gen = torch.Generator().manual_seed(derive_seed(self.args.seed, "readout", step, self._draws))
        nan = last.detach().new_full((), float("nan"))
        losses: list[Tensor] = [nan] * self.depth + [last.float()]
        for l in sorted([*graph, *values]):
            if l in values:
                with torch.no_grad():
                    losses[l] = self.lens.token_mean(states[l], labels, fraction, gen)
            else:
                losses[l] = self.lens.token_mean(states[l], labels, fraction, gen)
        observed = torch.zeros(self.depth + 1, dtype=torch.bool)
        observed[[*graph, *values, self.depth]] = True
        return torch.stack(losses), observed

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """SFTTrainer's loss, plus the layerwise objective's terms (Σ λ_l s_l, or the early-exit losses), from
        the layers the objective's plan asks for (module docstring)."""
        if not self.objective.reads_layers:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        states: list[Tensor] = []
        handles = self._capture(states)
        try:  # TRL's forward and loss; the hooks keep states 0..L-1 on the way
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            for h in handles:
                h.remove()
        loss = result[0] if return_outputs else result
        labels = inputs["labels"]
        trained = (labels[:, 1:] != -100).sum().clamp(min=1)  # this micro-batch's trained tokens
        last = loss * (
            self._denominator(num_items_in_batch, trained) / trained
        )  # f_L as a token mean, with grad
        losses, observed = self._read(states[: self.depth], labels, last, model.training)
        objective_value, info = self.objective.combine(losses, observed)
        extra = objective_value - losses[-1]  # Σ λ_l s_l (or the early exits' share), a per-micro-batch mean
        if self._loss_is_scaled(
            num_items_in_batch
        ):  # SFTTrainer's loss already sums over accumulated micro-batches
            extra = extra / self.current_gradient_accumulation_steps
        if model.training:
            self._record(losses, info)
        total = loss + extra.to(loss.dtype)
        return (total, result[1]) if return_outputs else total

    @torch.no_grad()
    def forward_with_states(
        self, model: nn.Module, inputs: dict[str, Any], states: bool = True
    ) -> tuple[Tensor, list[Tensor]]:
        """The model's logits ``[B, T, V]`` on a batch and, with ``states``, the states 0..L−1 its layers
        took (``[B, T, H]`` each), by the trainer's hooks."""
        kept: list[Tensor] = []
        handles = self._capture(kept) if states else []
        try:
            forward = {
                k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")
            }
            logits = model(**forward).logits
        finally:
            for h in handles:
                h.remove()
        return logits, kept[: self.depth]

    def _calibration_losses(self, model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        """f_0..f_L ``[L + 1]`` of one batch by the logit lens (the last layer from the model's own logits)."""
        logits, states = self.forward_with_states(model, inputs)
        labels = inputs["labels"]
        layers = [self.lens.token_mean(s, labels) for s in states]
        shift = labels[:, 1:]
        mask = shift != -100
        last = torch.nn.functional.cross_entropy(logits[:, :-1][mask].float(), shift[mask])
        return torch.stack([*(v.float() for v in layers), last])

    def _denominator(self, num_items_in_batch: Any, trained: Tensor) -> Tensor:
        """What SFTTrainer divided the summed token losses by, over its cross-device multiplier: loss times this
        is the micro-batch's summed token loss."""
        if num_items_in_batch is None:
            return trained.to(torch.float32)
        denom = torch.as_tensor(num_items_in_batch, device=trained.device).to(torch.float32)
        if self.args.average_tokens_across_devices:
            denom = denom / (self.accelerator.num_processes // self.get_tp_size())
        return denom

    def _loss_is_scaled(self, num_items_in_batch: Any) -> bool:
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:
            scaled = bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None)
        return scaled
