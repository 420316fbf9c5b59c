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

from typing import Any

import torch
from torch import Tensor, nn
from trl import SFTTrainer

from unrolled.models.hf import decoder_layers, logit_lens
from unrolled.seeding import derive_seed
from unrolled.train.hf import ConstraintsMixin
from unrolled.train.sft_config import CONSTRAINT_FIELDS, EARLY_EXIT_FIELDS, ConstrainedSFTConfig
from unrolled.validation import ConfigError

__all__ = ["CONSTRAINT_FIELDS", "EARLY_EXIT_FIELDS", "ConstrainedSFTConfig", "ConstrainedSFTTrainer"]


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
