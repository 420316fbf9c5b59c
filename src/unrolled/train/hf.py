"""Constrained learning on the Hugging Face stack: a ``transformers.Trainer`` whose loss reads every layer.

:class:`ConstrainedTrainer` trains any solver (a module whose forward returns a
:class:`~unrolled.trajectory.Trajectory`: :class:`~unrolled.models.hf.EncoderSolver`,
:class:`~unrolled.models.hf.LanguageModelSolver`, the UT text classifier) with ERM on the last layer or the
library's constrained Lagrangian f_L + Σ λ_l s_l, through the same
:class:`~unrolled.constrained.lagrangian.ConstrainedObjective` as the own-model training loop: the same
:class:`~unrolled.constrained.descent.DescentConstraints`, projected or resilient
:class:`~unrolled.constrained.multipliers.Multipliers`, and a dual step every ``dual_every`` optimizer steps.
Everything else is the Trainer's: optimizers, schedules, mixed precision, gradient accumulation, ``accelerate``
and ``torchrun`` (the multipliers all-reduce their slacks, so every rank holds the same λ), logging
integrations, checkpoints and ``resume_from_checkpoint``.

- **Objectives**: ERM, the constrained Lagrangian (with bounded, resilient or calibrated remedies for
  infeasible constraints), or LayerSkip's early-exit loss (:class:`~unrolled.constrained.EarlyExitConfig`).
- **Logs**: every ``logging_steps`` the Trainer's log gets ``layer_loss/l`` (mean since the last log),
  ``slack/l`` and ``multiplier/l``, ``task_weight`` (the share of the loss's layer weights the task loss
  holds) and ``infeasible_constraints`` (how many constraints look infeasible,
  :mod:`unrolled.constrained.infeasibility`, which also logs a warning naming them), so TensorBoard or W&B
  show them when ``report_to`` turns them on.
- **Checkpoints**: each ``checkpoint-N/`` folder also holds ``constraints.pt`` (multipliers, dual-step count,
  pending slack sums); ``train(resume_from_checkpoint=...)`` restores it with the rest.
- **Perturbations**: ``train_noise`` perturbs the input embeddings while training (a forward hook on
  ``get_input_embeddings()``, as NEFTune), from a seeded generator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from unrolled.constrained.config import ConstraintConfig, EarlyExitConfig
from unrolled.constrained.factory import objective_from_config
from unrolled.constrained.multipliers import all_reduce_mean
from unrolled.constrained.objective import Objective
from unrolled.perturb import EmbeddingNoise, Perturbation
from unrolled.seeding import derive_seed
from unrolled.trajectory import LossFn

CONSTRAINTS_FILE = "constraints.pt"
"""The objective's state inside each Trainer checkpoint folder."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""


def model_depth(model: nn.Module) -> int:
    """The number of layers L of a solver (its ``depth``, or its config's ``num_hidden_layers``)."""
    depth = getattr(model, "depth", None) or getattr(
        getattr(model, "config", None), "num_hidden_layers", None
    )
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"cannot tell how many layers {type(model).__name__} has; pass depth=")
    return depth


class _ConstraintCallback(TrainerCallback):
    """Dual steps after optimizer steps, and the objective's state into every checkpoint folder."""

    def __init__(self, trainer: ConstrainedTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.objective.sync_step(state.global_step, state.max_steps)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # the train-time noise of step k comes from a stream seeded by k: a resumed run draws what it would have
        gen = getattr(self.trainer, "_noise_generator", None)
        if gen is not None:
            gen.manual_seed(derive_seed(self.trainer.noise_seed, "step", state.global_step))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        info = self.trainer.objective.after_step(state.global_step, self.trainer.heldout_slack)
        if "multipliers" in info:
            self.trainer._dual_info = info

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            torch.save(self.trainer.objective.state_dict(), os.path.join(folder, CONSTRAINTS_FILE))


class ConstraintsMixin:
    """What :class:`ConstrainedTrainer` and :class:`~unrolled.train.sft.ConstrainedSFTTrainer` share: the
    objective and its dual steps, the layerwise logs, the multipliers in checkpoints and back on resume, and
    train-time embedding noise. Call :meth:`_setup_constraints` after the Trainer's own ``__init__``."""

    objective: Objective
    depth: int

    def _setup_constraints(
        self,
        constraints: ConstraintConfig | EarlyExitConfig | None,
        depth: int,
        per_sample_loss: LossFn | None,
        heldout_batch: Callable[[int], tuple[Any, Tensor]] | None,
        train_noise: Perturbation | None,
        noise_seed: int,
    ) -> None:
        self.depth = depth
        self.objective, self._heldout = objective_from_config(
            constraints,
            depth,
            per_sample_loss,
            None if heldout_batch is None else self._on_device(heldout_batch),
            total_steps=max(1, int(self.args.max_steps)),  # type: ignore[attr-defined]
            where=str(self.args.output_dir),  # type: ignore[attr-defined]
        )
        self.constraints = constraints
        self.train_noise, self.noise_seed = train_noise, noise_seed
        self._layer_sums: Tensor | None = None
        self._layer_count: Tensor | None = None
        self._last_info: dict[str, Any] = {}
        self._dual_info: dict[str, Any] = {}
        self.add_callback(_ConstraintCallback(self))  # type: ignore[attr-defined]

    def _on_device(
        self, heldout_batch: Callable[[int], tuple[Any, Tensor]]
    ) -> Callable[[int], tuple[Any, Tensor]]:
        def moved(size: int) -> tuple[Any, Tensor]:
            inputs, labels = heldout_batch(size)
            device = self.args.device
            return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)

        return moved

    def heldout_slack(self) -> Tensor:
        """Slacks on the held-out constraint batch (``dual_source: heldout``)."""
        assert self._heldout is not None
        return self._heldout(self.model)

    def _record(self, layers: Tensor, info: dict[str, Any]) -> None:
        """Keep one micro-batch's layerwise losses ``[L + 1]`` (NaN where a layer was not read) and the
        objective's report for the next log."""
        layers = layers.detach().double().cpu()
        read = torch.isfinite(layers)
        layers, read = torch.where(read, layers, 0.0), read.double()
        self._layer_sums = layers if self._layer_sums is None else self._layer_sums + layers
        self._layer_count = read if self._layer_count is None else self._layer_count + read
        self._last_info = info

    def _calibrate(self) -> None:
        """The objective's targets from the model before training: its layerwise losses on the first
        ``calibrate.batches`` training batches (with the training noise; the mean over ranks)."""
        config = getattr(self.objective, "calibration_config", None)
        assert config is not None
        model = self.model  # type: ignore[attr-defined]
        sums: Tensor | None = None
        count = 0
        with torch.no_grad():
            for batch in self.get_train_dataloader():  # type: ignore[attr-defined]
                losses = self._calibration_losses(model, self._prepare_inputs(batch)).double().cpu()  # type: ignore[attr-defined]
                sums = losses if sums is None else sums + losses
                count += 1
                if count == config.batches:
                    break
        if sums is None:
            raise ValueError("calibration needs at least one training batch; the training set is empty")
        self.objective.calibrate(all_reduce_mean(sums / count))  # type: ignore[attr-defined]

    def _calibration_losses(self, model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        """f_0..f_L ``[L + 1]`` of one batch, without gradients (for calibration)."""
        raise NotImplementedError

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's log, with the layerwise losses, slacks and multipliers of constrained training."""
        if "loss" in logs and self._layer_sums is not None:
            assert self._layer_count is not None
            for l, (v, n) in enumerate(
                zip(self._layer_sums.tolist(), self._layer_count.tolist(), strict=True)
            ):
                if n > 0:
                    logs[f"layer_loss/{l}"] = v / n
            self._layer_sums, self._layer_count = None, None
            # the task's share of the loss: at the current multipliers, or as the last step weighed the layers
            weight = None if self.objective.constrained else self._last_info.get("task_weight")
            logs["task_weight"] = self.objective.task_weight(self.depth) if weight is None else weight
            if self.objective.constrained:
                lam = self.objective.multipliers.value.tolist()  # type: ignore[attr-defined]
                for l, v in enumerate(lam, start=1):
                    logs[f"multiplier/{l}"] = v
                for l, v in enumerate(self._last_info.get("slacks", []), start=1):
                    if v is not None:
                        logs[f"slack/{l}"] = v
                flagged = self.objective.monitor.flagged  # type: ignore[attr-defined]
                logs["infeasible_constraints"] = len(flagged)
                for l in flagged:
                    logs[f"infeasible/{l}"] = 1.0
        super().log(logs, *args, **kwargs)

    def training_step(self, model: nn.Module, inputs: Any, *args: Any, **kwargs: Any) -> Tensor:
        """``Trainer.training_step``; a non-finite loss stops the run before the step is taken or saved."""
        loss = super().training_step(model, inputs, *args, **kwargs)  # type: ignore[misc]
        value = float(loss.detach())
        if not math.isfinite(value):
            last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None  # type: ignore[attr-defined]
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"the training loss is {value} at step {self.state.global_step + 1} (before the optimizer "  # type: ignore[attr-defined]
                f"step); {kept}. Lower the learning rate, or check the data and the noise level."
            )
        return loss

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``, restoring the multipliers too when resuming; train-time embedding noise on."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint to resume from in {self.args.output_dir}")
        if resume_from_checkpoint:
            path = os.path.join(str(resume_from_checkpoint), CONSTRAINTS_FILE)
            if os.path.isfile(path):
                self.objective.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))
            elif self.objective.constrained:
                raise FileNotFoundError(
                    f"{path}: the checkpoint holds no multipliers to resume constrained training from"
                )
        hook = None
        if self.train_noise is not None:
            embeddings = self.model.get_input_embeddings()
            self._noise_generator = torch.Generator().manual_seed(self.noise_seed)  # reseeded every step
            hook = EmbeddingNoise(embeddings, self.train_noise, "train", self._noise_generator)
        try:
            if self.objective.needs_calibration:  # a fresh run (a resumed one restored its targets above)
                self._calibrate()
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            if hook is not None:
                hook.remove()


class ConstrainedTrainer(ConstraintsMixin, Trainer):
    """A ``Trainer`` for solvers: ERM on f_L (``constraints=None``) or the constrained Lagrangian.

    Args:
        model: a module whose ``forward(**batch)`` returns a Trajectory (batches carry ``labels``).
        constraints: the descent constraints and their dual ascent, or an
            :class:`~unrolled.constrained.EarlyExitConfig` for LayerSkip's early-exit loss (None: ERM on the
            last layer).
        per_sample_loss: ``(prediction, labels) -> [B]``; default: the model's ``per_sample_loss`` if it has
            one, else the trajectory's fused ``state_loss`` (language models).
        depth: the model's number of layers (default: read off the model).
        heldout_batch: ``size -> (inputs, labels)``, a held-out constraint batch for ``dual_source: heldout``
            (the same contract as the own-model loop; inputs a mapping of keyword tensors).
        train_noise: a perturbation of the input embeddings while training (None: none).
        noise_seed: the seed of that noise.
        *args, **kwargs: everything ``transformers.Trainer`` takes.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean; the Trainer divides by GA steps

    def __init__(
        self,
        *args: Any,
        constraints: ConstraintConfig | EarlyExitConfig | None = None,
        per_sample_loss: LossFn | None = None,
        depth: int | None = None,
        heldout_batch: Callable[[int], tuple[Any, Tensor]] | None = None,
        train_noise: Perturbation | None = None,
        noise_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is not None and training_args.ddp_find_unused_parameters is None:
            # DDP's search for unused parameters walks the forward's output tensors; a Trajectory hides them, so
            # every parameter would look unused (and then be reported ready twice). Every parameter of a solver
            # gets a gradient through the last layer's readout: there is nothing to search for.
            training_args.ddp_find_unused_parameters = False
        super().__init__(*args, **kwargs)
        model = self.model
        loss = per_sample_loss or getattr(model, "per_sample_loss", None)
        self._setup_constraints(
            constraints, depth or model_depth(model), loss, heldout_batch, train_noise, noise_seed
        )
        # A classifier's readout is a pooled vector and a linear layer: keeping it costs less than recomputing
        # it, and a recomputed readout fires DDP's gradient hooks once per layer (language models recompute
        # inside their own chunked loss instead)
        self.objective.recompute_readouts = False  # type: ignore[attr-defined]
        if "labels" not in (self.args.label_names or []):
            self.label_names = ["labels"]

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """ERM on the last layer's readout, or f_L + Σ λ_l s_l over the layerwise losses."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        trajectory = model(**inputs)
        loss, info = self.objective.loss(trajectory, labels)
        if model.training:
            if "layer_losses" in info:
                values = [math.nan if v is None else v for v in info["layer_losses"]]
                layers = torch.tensor(values, dtype=torch.float64)
            else:  # ERM: read the other layers without a graph, for the logs
                with torch.no_grad():
                    layers = trajectory.layerwise_losses(labels, self.objective.per_sample_loss)
            self._record(layers, info)
        if return_outputs:
            return loss, {"logits": trajectory.prediction()}
        return loss

    def _calibration_losses(self, model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        return model(**inputs).layerwise_losses(labels, self.objective.per_sample_loss)
