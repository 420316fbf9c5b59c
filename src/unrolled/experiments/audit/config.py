"""The config of a descent audit: which pretrained model, on which texts, how much of them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from unrolled.config import Bool, ConfigModel, Int, Str
from unrolled.experiments.config import ExperimentConfig

PositiveInt = Annotated[Int, Field(ge=1)]


class AuditTask(ConfigModel):
    """Read a pretrained model out at every layer through its own head, on some texts, without training.

    ``model``: an alias (``smollm2-135m-instruct``, ``minilm``), a local folder (e.g. a classifier saved by a
    text experiment: ``runs/<run>/models/<method>/seed0``) or a hub name. A sequence classifier is read by
    its classification head (loss and accuracy per layer, on labelled texts); a causal LM by the logit lens
    (next-token loss and accuracy per layer).

    ``data``: a text carrier (``newsgroups``, ``chatterbot``; ``chatterbot_pairs``: the single-turn dialogs,
    each formatted with the model's chat template), a local file (``.txt``: documents separated by blank
    lines; ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` with ``text_column`` and, for classifiers,
    ``label_column``), or a hub dataset name (its ``split``). ``max_examples`` texts (a seeded sample) of at
    most ``max_length`` tokens, ``batch_size`` at a time.
    """

    kind: Literal["audit"] = "audit"
    model: Str
    data: Str = "newsgroups"
    text_column: Str = "text"
    label_column: Str = "label"
    hub_config: Str | None = None
    split: Str = "test"
    max_examples: PositiveInt = 64
    max_length: Annotated[Int, Field(ge=4)] = 256
    batch_size: PositiveInt = 8
    chunk_tokens: PositiveInt = 1024
    chat_template: Bool = True


class AuditExperiment(ExperimentConfig):
    """A descent audit: the loss (and accuracy) of every layer's readout of a pretrained model, per seed."""

    task: AuditTask
    seeds: Annotated[tuple[Int, ...], Field(min_length=1)] = (0,)
