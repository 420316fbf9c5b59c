"""The config of constrained-SFT experiments: the data and model, the methods, training, noise, the win rate."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from unrolled.config import Bool, ConfigModel, Float, Int, Str
from unrolled.constrained.config import ConstraintConfig, EarlyExitConfig
from unrolled.experiments.config import ExperimentConfig
from unrolled.perturb import PerturbationConfig
from unrolled.tasks.instruct.data import InstructDataConfig
from unrolled.train.config import CompileMode, ReportTo
from unrolled.validation import check

PositiveInt = Annotated[Int, Field(ge=1)]
Positive = Annotated[Float, Field(gt=0)]
Gamma = Annotated[Float, Field(ge=0)]

SFT_GAMMAS = (0.0, 0.5, 1.0, 1.5)
"""The paper's test grid for eval token accuracy (Porras-Valenzuela, Hadou & Ribeiro, Sec. 5.3)."""

WINRATE_UNIT = "winrate"
"""The method name of the judging units (in ``metrics.jsonl`` and unit records); no method may take it."""


class SFTTaskConfig(InstructDataConfig):
    """The instructions (:class:`~unrolled.tasks.instruct.InstructDataConfig`), the base model, the length.

    ``model``: an offline alias (``smollm2-135m-instruct``, see ``unrolled models``), a local folder or a
    hub name (``meta-llama/Llama-3.1-8B``). ``max_length``: tokens per example after the chat template
    (longer ones are truncated by TRL and counted in the report).
    """

    kind: Literal["sft"] = "sft"
    model: Str = "smollm2-135m-instruct"
    max_length: Annotated[Int, Field(ge=8)] = 256


class LoraSettings(ConfigModel):
    """LoRA adapters through PEFT (``peft.LoraConfig``): rank, scale, dropout, the modules they wrap."""

    r: PositiveInt = 16
    alpha: Positive = 32.0
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    target_modules: Annotated[tuple[Str, ...], Field(min_length=1)] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )


class SFTMethod(ConfigModel):
    """One way to fine-tune: ERM (neither ``constraints`` nor ``early_exit``), under layerwise descent
    constraints, or with LayerSkip's early-exit loss; ``finetune: false`` evaluates the base model as it is
    (a row to compare with: what fine-tuning buys or costs).

    ``readout_token_fraction`` < 1 reads the intermediate layers out on that random share of the trained
    tokens each step (an unbiased estimate; the last layer always on all). ``lr`` overrides ``train.lr``.
    ``seeds`` runs the method on these of the experiment's seeds only (a study screens many settings on one
    seed and compares the best on several).
    """

    name: Str
    label: Str | None = None
    constraints: ConstraintConfig | None = None
    early_exit: EarlyExitConfig | None = None
    finetune: Bool = True
    seeds: Annotated[tuple[Int, ...], Field(min_length=1)] | None = None
    readout_token_fraction: Annotated[Float, Field(gt=0, le=1)] = 1.0
    lr: Positive | None = None

    @model_validator(mode="after")
    def _one_objective(self) -> SFTMethod:
        check(
            self.constraints is None or self.early_exit is None,
            "early_exit",
            "a method takes constraints or early_exit, not both",
        )
        if not self.finetune:
            check(
                self.constraints is None and self.early_exit is None,
                "finetune",
                "a method that is not fine-tuned takes no constraints or early_exit",
            )
        return self

    def runs_on(self, seed: int) -> bool:
        """Whether this method has a unit for ``seed``."""
        return self.seeds is None or seed in self.seeds

    @property
    def is_erm(self) -> bool:
        """Fine-tuned on the last layer's loss alone."""
        return self.finetune and self.constraints is None and self.early_exit is None


class SFTTrainConfig(ConfigModel):
    """Training through ``ConstrainedSFTTrainer`` (``SFTConfig`` keys): ``steps`` optimizer steps of
    ``batch_size`` × ``gradient_accumulation`` examples; ``lora: null`` is full fine-tuning."""

    steps: PositiveInt = 200
    batch_size: PositiveInt = 8
    gradient_accumulation: PositiveInt = 1
    eval_batch_size: PositiveInt = 16
    lr: Positive = 2e-4
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    warmup_ratio: Annotated[Float, Field(ge=0, lt=1)] = 0.05
    schedule: Literal["linear", "cosine", "constant"] = "cosine"
    max_grad_norm: Positive = 1.0
    lora: LoraSettings | None = LoraSettings()
    gradient_checkpointing: Bool = False
    bf16: Bool = False
    readout_chunk_tokens: PositiveInt = 1024
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 50
    report_to: ReportTo = "none"
    compile: bool | CompileMode = False


class SFTPerturbationConfig(PerturbationConfig):
    """Noise on the token embeddings: Gaussian γσ (σ: the std of the base model's token embeddings over the
    training tokens, measured once) or NEFTune-scaled uniform noise; ``train_gamma`` while training, every
    ``test_gammas`` level at evaluation."""

    train_gamma: Gamma = 0.5
    target: Literal["embedding"] = "embedding"
    test_gammas: Annotated[tuple[Gamma, ...], Field(min_length=1)] = SFT_GAMMAS
    layer_gammas: Annotated[tuple[Gamma, ...], Field(min_length=1)] | None = None
    """The test γ at which every layer is read out by the logit lens (None: every test γ). Reading 31 layers
    through a 49k-token vocabulary costs about eight forwards; elsewhere only accuracy and the last layer's
    loss are measured."""

    @model_validator(mode="after")
    def _layer_gammas(self) -> SFTPerturbationConfig:
        if self.layer_gammas is not None:
            missing = [g for g in self.layer_gammas if g not in self.test_gammas]
            check(
                not missing, "layer_gammas", f"{missing} are not among test_gammas {list(self.test_gammas)}"
            )
        return self

    def reads_layers_at(self, gamma: float) -> bool:
        return self.layer_gammas is None or gamma in self.layer_gammas


class JudgeConfig(ConfigModel):
    """A pairwise judge (docs/JUDGES.md): ``reference`` (MiniLM similarity to the reference answer, offline),
    ``local`` (a Hugging Face causal LM, ``model`` an alias, folder or hub name) or ``openai`` (an
    OpenAI-compatible endpoint at ``base_url`` serving ``model``; the key from ``OPENAI_API_KEY``)."""

    kind: Literal["reference", "local", "openai"] = "reference"
    model: Str | None = None
    base_url: Str | None = None
    timeout: Positive = 30.0
    max_retries: Annotated[Int, Field(ge=0)] = 3

    @model_validator(mode="after")
    def _needs(self) -> JudgeConfig:
        if self.kind in ("local", "openai"):
            check(self.model is not None, "model", f"a {self.kind} judge needs a model")
        if self.kind == "openai":
            check(self.base_url is not None, "base_url", "an openai judge needs the endpoint's base_url")
        return self


class WinRateConfig(ConfigModel):
    """Greedy generation from every method on the win-rate prompts at each of ``gammas``, then each pair
    judged in both orders against the ``baseline`` method (default: the first method fine-tuned by ERM)."""

    gammas: Annotated[tuple[Gamma, ...], Field(min_length=1)] = (0.0, 1.5)
    max_new_tokens: PositiveInt = 64
    batch_size: PositiveInt = 16
    baseline: Str | None = None
    judges: Annotated[tuple[JudgeConfig, ...], Field(min_length=1)] = (JudgeConfig(),)
    confidence: Annotated[Float, Field(gt=0, lt=1)] = 0.95


class SFTExperiment(ExperimentConfig):
    """Constrained against ERM SFT of a causal LM with perturbed token embeddings (the paper's Sec. 5.3).

    Each method fine-tunes the base model (LoRA or full) with train-time noise; then eval token accuracy,
    the logit-lens loss of every layer and the share of non-descending layers at each test γ, and responses
    on the win-rate prompts. A last phase judges every method against the baseline. ``published`` holds the
    paper's token accuracy per method keyed by γ; ``published_winrate`` its win rate keyed by γ.
    """

    task: SFTTaskConfig = SFTTaskConfig()
    methods: Annotated[tuple[SFTMethod, ...], Field(min_length=1)]
    train: SFTTrainConfig = SFTTrainConfig()
    perturbation: SFTPerturbationConfig = SFTPerturbationConfig()
    winrate: WinRateConfig | None = WinRateConfig()
    published: dict[Str, dict[float, Float]] | None = None
    published_winrate: dict[float, Float] | None = None

    @model_validator(mode="after")
    def _baseline(self) -> SFTExperiment:
        names = [m.name for m in self.methods]
        for i, m in enumerate(self.methods):
            if m.seeds is not None:
                extra = [s for s in m.seeds if s not in self.seeds]
                check(not extra, f"methods[{i}].seeds", f"{extra} are not among the experiment's seeds")
        check(WINRATE_UNIT not in names, "methods", f"{WINRATE_UNIT!r} is the name of the judging units")
        if self.winrate is None:
            return self
        if self.winrate.baseline is not None:
            check(
                self.winrate.baseline in names,
                "winrate.baseline",
                f"no method named {self.winrate.baseline!r}",
            )
        else:
            check(
                any(m.is_erm for m in self.methods),
                "winrate.baseline",
                "name the baseline method (no fine-tuned method without constraints to default to)",
            )
        check(len(names) >= 2, "winrate", "a win rate needs at least two methods (or set winrate: null)")
        base = next(m for m in self.methods if m.name == self.baseline())
        check(base.seeds is None or set(base.seeds) >= set(self.seeds), "winrate.baseline",
              f"the baseline {base.name!r} must run on every seed")  # fmt: skip
        return self

    def baseline(self) -> str:
        assert self.winrate is not None
        return self.winrate.baseline or next(m.name for m in self.methods if m.is_erm)
