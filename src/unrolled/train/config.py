"""How the library's own solvers are trained: optimizer, schedule, steps, batch, logging, checkpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from unrolled.config import ConfigModel, Float, Int

PositiveInt = Annotated[Int, Field(ge=1)]
Beta = Annotated[Float, Field(ge=0, lt=1)]
ReportTo = Literal["none", "tensorboard", "wandb"] | list[Literal["tensorboard", "wandb"]]
"""``report_to``: ``"none"``, one writer, or a list of them (:mod:`unrolled.train.tracking`)."""
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
"""``compile``: a ``torch.compile`` mode (:mod:`unrolled.train.compiled`)."""


class ScheduleConfig(ConfigModel):
    """Learning-rate schedule: constant, step (×``factor`` every ``every`` steps) or cosine to 0."""

    kind: Literal["constant", "step", "cosine"] = "constant"
    every: PositiveInt = 4000
    factor: Annotated[Float, Field(gt=0, le=1)] = 0.5


class TrainConfig(ConfigModel):
    """How learned solvers are fit.

    ``protocol`` (in-context regression):
      * ``online`` (default): a fresh batch of ``batch_size`` prompts every ``resample_every`` steps.
      * ``fixed_batch``: one batch of ``batch_size`` prompts drawn once and used for every step (the
        protocol that produced the published Memformer figures).
    ``clip`` bounds the gradient norm of each parameter tensor separately (per matrix), as in the paper.
    ``report_to``: where the logs go besides ``metrics.jsonl`` (:mod:`unrolled.train.tracking`):
    ``tensorboard`` (the ``tensorboard`` extra) and/or ``wandb`` (when installed); ``"none"`` (default) or
    ``[]``: nowhere else. The Hugging Face families take the same setting.
    ``ensemble``: train the units of an experiment that share a shape (the seeds of one method at one depth)
    in lockstep as one batched model (:mod:`unrolled.train.ensemble`) where the family finds it pays (the
    regression family: batches of at most 2^19 prompt entries); every member's results are those it has
    trained alone (to floating-point rounding). ``false``: one unit at a time.
    ``compile``: compile each step's forward pass and loss with ``torch.compile`` (:mod:`unrolled.train.compiled`):
    ``false`` (default), ``true`` (mode ``default``) or a mode (``reduce-overhead`` adds CUDA graphs on a GPU).
    The first step pays the compilation (tens of seconds); the Hugging Face families pass it on as the
    Trainer's ``torch_compile`` / ``torch_compile_mode``.
    """

    protocol: Literal["online", "fixed_batch"] = "online"
    steps: PositiveInt = 1000
    batch_size: PositiveInt = 1000
    resample_every: PositiveInt = 1
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[Float, Field(gt=0)] = 0.01
    betas: Annotated[tuple[Beta, ...], Field(min_length=2, max_length=2)] = (0.9, 0.999)
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    clip: Annotated[Float, Field(gt=0)] | None = None
    schedule: ScheduleConfig = ScheduleConfig()
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 200
    report_to: ReportTo = "none"
    compile: bool | CompileMode = False
    ensemble: bool = True
