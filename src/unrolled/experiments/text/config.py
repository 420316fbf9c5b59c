"""The config of text-classification experiments: pretrained encoders and the UT, their training, the noise."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from unrolled.config import ConfigModel, Float, Int, Str
from unrolled.constrained.config import ConstraintConfig, EarlyExitConfig
from unrolled.experiments.config import ExperimentConfig
from unrolled.perturb import PerturbationConfig
from unrolled.tasks.text.config import TextDataConfig
from unrolled.train.config import CompileMode, ReportTo
from unrolled.validation import check

PositiveInt = Annotated[Int, Field(ge=1)]
Positive = Annotated[Float, Field(gt=0)]
Dropout = Annotated[Float, Field(ge=0, lt=1)]

TEXT_GAMMAS = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.1)
"""The test perturbation grid: the paper's γ ∈ [0, 2.1] in steps of 0.3."""


class HFEncoderMethod(ConfigModel):
    """A pretrained Hugging Face encoder fine-tuned as a classifier, every layer read out by one head.

    ``model`` is an alias that works offline (``minilm``), a local folder, or a hub name
    (``distilbert-base-uncased``, ``roberta-base``). ``readout: model`` uses the model's own
    sequence-classification head on every layer (a standard checkpoint that ``unrolled audit`` and
    ``from_pretrained`` load); ``linear`` pools (``pooling``) and applies a new linear layer. ``dropout``
    is the rate of every dropout of the model (and of a linear head): 0, the default, makes each layer's
    readout in training what it is at test. ``lr`` overrides ``train.lr``. ``constraints`` trains under layerwise descent constraints instead of ERM.
    """

    name: Str
    kind: Literal["hf_encoder"]
    model: Str = "minilm"
    readout: Literal["model", "linear"] = "model"
    pooling: Literal["mean", "first"] = "mean"
    dropout: Dropout = 0.0
    lr: Positive | None = None
    constraints: ConstraintConfig | None = None
    early_exit: EarlyExitConfig | None = None
    label: Str | None = None

    @model_validator(mode="after")
    def _one_objective(self) -> HFEncoderMethod:
        check(one_objective(self), "early_exit", "a method takes constraints or early_exit, not both")
        return self


def one_objective(method: HFEncoderMethod | UTTextMethod) -> bool:
    """A method trains under descent constraints, the early-exit loss, or neither (ERM); never both."""
    return method.constraints is None or method.early_exit is None


class UTTextMethod(ConfigModel):
    """The Unrolled Transformer as a text classifier (``models/text_classifier.py``).

    ``embeddings: pretrained`` copies and freezes the token embeddings of ``embedding_model`` and uses its
    tokenizer; ``scratch`` learns a new table (with the same tokenizer).
    """

    name: Str
    kind: Literal["ut"]
    width: PositiveInt = 128
    depth: PositiveInt = 6
    heads: PositiveInt = 4
    embeddings: Literal["pretrained", "scratch"] = "pretrained"
    embedding_model: Str = "minilm"
    activation: Literal["gelu", "relu", "tanh", "identity"] = "relu"
    dropout: Dropout = 0.0
    init_std: Annotated[Float, Field(ge=0)] = 0.02
    lr: Positive | None = None
    constraints: ConstraintConfig | None = None
    early_exit: EarlyExitConfig | None = None
    label: Str | None = None

    @model_validator(mode="after")
    def _heads_divide_width(self) -> UTTextMethod:
        check(self.width % self.heads == 0, "heads", f"must divide width {self.width}")
        check(one_objective(self), "early_exit", "a method takes constraints or early_exit, not both")
        return self


class TextPerturbationConfig(PerturbationConfig):
    """Noise on the token embeddings: none while training by default, the paper's grid γ ∈ [0, 2.1] at test."""

    train_gamma: Annotated[Float, Field(ge=0)] = 0.0
    target: Literal["input", "embedding"] = "embedding"
    test_gammas: Annotated[tuple[Annotated[Float, Field(ge=0)], ...], Field(min_length=1)] = TEXT_GAMMAS


TextMethod = Annotated[Union[HFEncoderMethod, UTTextMethod], Field(discriminator="kind")]  # noqa: UP007


class HFTrainConfig(ConfigModel):
    """Training through ``transformers.Trainer`` (AdamW): the keys map to ``TrainingArguments``.

    ``steps`` optimizer steps (``max_steps``) of ``batch_size`` examples; ``schedule`` is the learning-rate
    schedule after ``warmup_ratio`` of the steps; ``checkpoint_every`` steps a Trainer checkpoint is written
    (the last one kept; an interrupted unit resumes from it).
    """

    steps: PositiveInt = 200
    batch_size: PositiveInt = 16
    eval_batch_size: PositiveInt = 64
    lr: Positive = 5e-5
    weight_decay: Annotated[Float, Field(ge=0)] = 0.01
    warmup_ratio: Annotated[Float, Field(ge=0, lt=1)] = 0.1
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: Positive = 1.0
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 50
    report_to: ReportTo = "none"
    compile: bool | CompileMode = False


class TextExperiment(ExperimentConfig):
    """Text classification with perturbed token embeddings (Porras-Valenzuela, Hadou & Ribeiro, Sec. 5.2).

    Each method is fine-tuned with ERM or under descent constraints, then tested on held-out texts at every
    ``perturbation.test_gammas`` level: noise on the token embeddings (Gaussian γσ, σ the std of the clean
    token embeddings of the training texts; or NEFTune-scaled uniform noise). ``perturbation.train_gamma``
    > 0 adds noise while training too. ``published`` holds the paper's accuracy per method, keyed by γ.
    """

    task: TextDataConfig = TextDataConfig()
    methods: Annotated[tuple[TextMethod, ...], Field(min_length=1)]
    train: HFTrainConfig = HFTrainConfig()
    perturbation: TextPerturbationConfig = TextPerturbationConfig()
    published: dict[Str, dict[float, Float]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TextExperiment:
        check(
            self.perturbation.target == "embedding",
            "perturbation.target",
            "text is perturbed on its token embeddings: use target: embedding",
        )
        return self
