"""The config of in-context regression experiments: Memformers, mixtures, classical baselines, shifts."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, WithJsonSchema, model_validator

from unrolled.config import Bool, ConfigModel, Float, Int, Str, from_dict, to_dict
from unrolled.constrained.config import ConstraintConfig
from unrolled.experiments.config import ExperimentConfig
from unrolled.tasks.regression import Covariance, MixtureComponent, RegressionConfig
from unrolled.train.config import TrainConfig
from unrolled.validation import check

PositiveInt = Annotated[Int, Field(ge=1)]
Positive = Annotated[Float, Field(gt=0)]
MatrixA = Literal["full", "scalar", "fixed"]
MatrixB = Literal["zero", "free"]


class LearnedMethod(ConfigModel):
    """A trained in-context solver: the linear transformer or one of the Memformers.

    kinds:
      * ``linear_transformer``: Ahn et al.; Z ← Z + attn_l(Z).
      * ``memformer_cgd``: CGD-like memory, R_l = attn_l(Z_l) + γ_l R_{l-1}, Z ← Z + α_l R_l.
      * ``memformer_lfom``: LFOM memory, Z ← Z + Σ_{j≤l} Γ_j ⊙ attn_j(Z_j).
      * ``memformer_lfom_plus``: Z ← Z + attn_l(Z_l) + Σ_{j<l} Γ_j ⊙ attn_j(Z_j) (GD++/NAG variant).
      * ``memformer_recurrent``: R ← β_l R + γ_l Σ_h attn_{l,h}(Z), Z ← Z + α_l R, A_l = a_l I.
      * ``lfom``: a learnable linear first-order method without a transformer (depth = its steps),
        w_{k+1} = w_k − Σ_{i≤k} Γ_i ⊙ g_i (``lfom_form: tied``) or with per-step weights Γ^k_i
        (``full``); Γ starts at ``gamma_init`` (full: GD with step ``gamma_init``); gradients of
        (1/2n)‖Xw − y‖² (``lfom_objective: mean``) or ½‖Xw − y‖² (``sum``).

    ``constraints`` trains the model under layerwise descent constraints (primal-dual) instead of ERM.
    ``normalize`` divides each prompt's inputs by its context's RMS entry first, which makes the transformer
    kinds equivariant to a change of scale (docs/MODELS.md; not for ``lfom``).
    ``batch_size`` overrides ``train.batch_size`` for this method (e.g. to compare training batch sizes).
    """

    name: Str
    kind: Literal[
        "linear_transformer",
        "memformer_cgd",
        "memformer_lfom",
        "memformer_lfom_plus",
        "memformer_recurrent",
        "lfom",
    ]
    A: MatrixA = "full"
    B: MatrixB = "zero"
    heads: PositiveInt = 1
    init_std: Annotated[Float, Field(ge=0)] = 0.1
    fixed_scale: Float = 1.0
    gamma_init: Float = 0.0
    attention: Literal["reassociated", "direct"] = "reassociated"
    lfom_form: Literal["tied", "full"] = "tied"
    lfom_objective: Literal["mean", "sum"] = "mean"
    batch_size: PositiveInt | None = None
    constraints: ConstraintConfig | None = None
    normalize: Bool = False
    label: Str | None = None

    @model_validator(mode="after")
    def _recurrent_is_scalar(self) -> LearnedMethod:
        if self.kind == "memformer_recurrent":
            check(self.A == "scalar", "A", "memformer_recurrent uses A_l = a_l I: set A: scalar")
        check(
            not (self.normalize and self.kind == "lfom"),
            "normalize",
            "normalize applies to the transformer kinds; an lfom has no attention to normalize",
        )
        return self


class MixtureMethod(ConfigModel):
    """A mixture of Memformer experts with test-time adaptation (Dutta & Sra, Sec. 5; docs/MODELS.md).

    One expert per entry of ``expert_variances``, each trained (with ``train``) on the task scaled to that
    variance σ²; the experts are ``expert_kind`` models with ``A``, ``B``, ``heads`` as in
    :class:`LearnedMethod` (P and Q free by default, own Γ per expert). For every evaluated distribution
    (the task itself and each ``eval.shifts`` entry) the experts are frozen and the ``gate`` (``linear``,
    as the published code, or ``softmax``, as the paper's text) is fit — alone, or with the experts' Γ
    (``adapt: gates_and_gamma``) — for ``adapt_steps`` Adam steps at ``adapt_lr`` on one batch of
    ``adapt_size`` prompts from that distribution; the mixture is then scored on that batch (in-sample)
    and on fresh prompts of the same distribution. ``normalize``: scale-equivariant experts (see
    :class:`LearnedMethod`).
    """

    name: Str
    kind: Literal["mixture"]
    expert_kind: Literal["memformer_lfom", "memformer_lfom_plus", "memformer_cgd", "linear_transformer"] = (
        "memformer_lfom"
    )
    A: MatrixA = "full"
    B: MatrixB = "free"
    heads: PositiveInt = 1
    init_std: Annotated[Float, Field(ge=0)] = 0.1
    gamma_init: Float = 0.0
    expert_variances: Annotated[tuple[Positive, ...], Field(min_length=1)] = (1.0, 2.0, 3.0)
    gate: Literal["linear", "softmax"] = "linear"
    gate_init: Float = 0.0
    adapt: Literal["gates", "gates_and_gamma"] = "gates"
    adapt_steps: PositiveInt = 500
    adapt_lr: Positive = 0.01
    adapt_size: PositiveInt = 1000
    normalize: Bool = False
    label: Str | None = None

    MESSAGES: ClassVar[dict[tuple[str, str], str]] = {
        ("expert_variances", "too_short"): "needs at least one expert"
    }

    @model_validator(mode="after")
    def _gamma_needs_lfom(self) -> MixtureMethod:
        if self.adapt == "gates_and_gamma":
            check(
                self.expert_kind in ("memformer_lfom", "memformer_lfom_plus"),
                "adapt",
                f"gates_and_gamma adapts the LFOM masks Γ; {self.expert_kind!r} has none",
            )
        return self

    def expert(self, variance: float) -> LearnedMethod:
        """The :class:`LearnedMethod` of the expert for ``variance``."""
        return LearnedMethod(
            name=f"{self.name}_expert_var{variance:g}",
            kind=self.expert_kind,
            A=self.A,
            B=self.B,
            heads=self.heads,
            init_std=self.init_std,
            gamma_init=self.gamma_init,
            normalize=self.normalize,
        )


class ClassicalMethod(ConfigModel):
    """A classical first-order method run per prompt (batched).

    ``objective`` sets the gradient's scale: ``sum`` is ∇ ½‖Xw − y‖² (the published baselines' step sizes
    refer to it), ``mean`` is ∇ (1/2n)‖Xw − y‖² (the scale of Ahn et al.'s Lemma 1). With ``tune: true``
    the step size (and momentum, unless ``momentum`` fixes it) is chosen per depth on validation prompts from
    ``lr_grid`` (default: 40 log-spaced multiples of 1/λ_max(H)) and ``momentum_grid`` (default 0 … 0.95).
    ``preconditioner: inverse_covariance`` gives GD the task's true Σ_x⁻¹ (an oracle baseline).
    """

    name: Str
    kind: Literal["gd", "momentum", "nesterov", "cg"]
    lr: Positive | None = None
    momentum: Annotated[Float, Field(ge=0, lt=1)] | None = None
    objective: Literal["sum", "mean"] = "sum"
    preconditioner: Literal["identity", "inverse_covariance"] = "identity"
    tune: Bool = False
    lr_grid: Annotated[tuple[Positive, ...], Field(min_length=1)] | None = None
    momentum_grid: Annotated[tuple[Annotated[Float, Field(ge=0, lt=1)], ...], Field(min_length=1)] | None = (
        None
    )
    label: Str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ClassicalMethod:
        has_lr = self.kind in ("gd", "momentum", "nesterov")
        has_mom = self.kind in ("momentum", "nesterov")
        if self.kind == "cg":
            for key in ("lr", "momentum", "lr_grid", "momentum_grid"):
                check(getattr(self, key) is None, key, "conjugate gradient has no step size")
            check(not self.tune, "tune", "conjugate gradient has nothing to tune")
        if has_lr and not self.tune:
            check(self.lr is not None, "lr", f"required for {self.kind} unless tune: true")
        if self.tune:
            check(self.lr is None, "lr", "not used with tune: true (set lr_grid to choose candidates)")
            check(
                self.momentum is None or self.momentum_grid is None,
                "momentum",
                "give a fixed momentum or a momentum_grid, not both",
            )
        if has_mom and not self.tune:
            check(self.momentum is not None, "momentum", f"required for {self.kind}")
        if not has_mom:
            check(self.momentum is None, "momentum", f"{self.kind} has no momentum")
            check(self.momentum_grid is None, "momentum_grid", f"{self.kind} has no momentum")
        if self.preconditioner != "identity":
            check(self.kind == "gd", "preconditioner", "only gd takes a preconditioner")
        for key in ("lr_grid", "momentum_grid"):
            if getattr(self, key) is not None:
                check(self.tune, key, "only used with tune: true")
        return self


RegressionMethod = Annotated[LearnedMethod | MixtureMethod | ClassicalMethod, Field(discriminator="kind")]
"""A method of the regression family, chosen by its ``kind``."""


class ShiftConfig(ConfigModel):
    """A test distribution other than the training task: the task with some fields replaced.

    E.g. ``{name: var2.5, variance: 2.5}`` (the variance shift) or ``{name: gmm, covariance: mixture,
    mixture: [...]}``. Unset fields keep the task's value; the result is validated like a task.
    """

    name: Annotated[Str, Field(min_length=1)]
    variance: Float | None = None
    covariance: Covariance | None = None
    scales: tuple[Float, ...] | None = None
    mixture: tuple[MixtureComponent, ...] | None = None
    label_noise: Float | None = None

    @model_validator(mode="after")
    def _name(self) -> ShiftConfig:
        check(":" not in self.name, "name", f"must not contain ':', got {self.name!r}")
        return self

    def apply(self, task: RegressionConfig, path: str = "") -> RegressionConfig:
        """The shifted task (validated; errors name ``path``)."""
        data = to_dict(task)
        for key in ("variance", "covariance", "scales", "mixture", "label_noise"):
            value = getattr(self, key)
            if value is not None:
                data[key] = to_dict(value)
        if self.covariance is not None and self.covariance != "mixture" and self.mixture is None:
            data["mixture"] = None
        return from_dict(RegressionConfig, data, path)


class EvalConfig(ConfigModel):
    """Evaluation: ``batch_size`` fresh held-out prompts per seed (the same prompts for every method).

    ``in_sample: true`` evaluates on the training batch instead (fixed_batch protocol only) and labels
    every number as in-sample. ``validation_size`` prompts (separate from test) tune classical baselines.
    ``shifts`` are further test distributions (out of distribution): every method, trained on the task,
    is also scored on ``batch_size`` fresh prompts of each.
    """

    batch_size: PositiveInt = 1000
    in_sample: Bool = False
    validation_size: PositiveInt = 1000
    shifts: tuple[ShiftConfig, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> EvalConfig:
        names = [s.name for s in self.shifts]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "shifts", f"duplicate shift names: {', '.join(dup)}")
        return self


_PUBLISHED_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "additionalProperties": {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"type": "number"}},
                    {"type": "array", "items": {"type": "number"}},
                ]
            },
        },
        {"type": "null"},
    ],
    "description": "The paper's numbers per method: {depth: value}, or a list with one value per depth.",
}


class RegressionExperiment(ExperimentConfig):
    """In-context regression: learned solvers trained at each of ``depths``, classical ones run as deep.

    ``published`` holds the paper's numbers per method, keyed by depth (``{1: 0.12, 2: -0.84}``); a list is
    shorthand for one value per entry of ``depths``. Depths the paper has no number for are left blank.
    """

    task: RegressionConfig
    methods: Annotated[tuple[RegressionMethod, ...], Field(min_length=1)]
    depths: Annotated[tuple[Annotated[Int, Field(ge=1)], ...], Field(min_length=1)] = (1, 2, 3, 4)
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    published: Annotated[dict[Str, dict[int, Float]] | None, WithJsonSchema(_PUBLISHED_SCHEMA)] = None

    MESSAGES: ClassVar[dict[tuple[str, str], str]] = {
        **ExperimentConfig.MESSAGES,
        ("depths", "too_short"): "needs at least one depth (no layers)",
    }

    @model_validator(mode="before")
    @classmethod
    def _published_by_depth(cls, data: Any) -> Any:
        """Published lists (one value per depth, the older form) become mappings keyed by depth."""
        if not isinstance(data, dict) or not isinstance(data.get("published"), dict):
            return data
        depths = data.get("depths", cls.model_fields["depths"].default)
        published = {}
        for name, values in data["published"].items():
            if isinstance(values, list | tuple) and isinstance(depths, list | tuple):
                check(
                    len(values) == len(depths),
                    f"published.{name}",
                    f"needs one value per depth ({len(depths)}), got {len(values)}; or key the values by "
                    "depth, e.g. {1: 0.12, 2: -0.84}",
                )
                values = dict(zip(depths, values, strict=True))
            published[name] = values
        return {**data, "published": published}

    @model_validator(mode="after")
    def _consistent(self) -> RegressionExperiment:
        check(len(set(self.depths)) == len(self.depths), "depths", "must be distinct")
        if self.eval.in_sample:
            check(
                self.train.protocol == "fixed_batch",
                "eval.in_sample",
                "in-sample evaluation needs train.protocol: fixed_batch (online training has no single "
                "training batch)",
            )
        for i, shift in enumerate(self.eval.shifts):
            shift.apply(self.task, f"eval.shifts[{i}]")
        return self

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def shifted_tasks(self) -> dict[str, RegressionConfig]:
        """The task of every ``eval.shifts`` entry, by name."""
        return {s.name: s.apply(self.task, f"eval.shifts.{s.name}") for s in self.eval.shifts}
