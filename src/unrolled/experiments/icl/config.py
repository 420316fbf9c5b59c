"""The config of in-context learning experiments with softmax learners (``task.kind: icl``)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from unrolled.config import ConfigModel, Float, Int, Str, from_dict, to_dict
from unrolled.constrained.config import ConstraintConfig, EarlyExitConfig
from unrolled.experiments.config import ExperimentConfig
from unrolled.tasks.regression import Covariance, MixtureComponent, RegressionConfig
from unrolled.train.config import TrainConfig
from unrolled.validation import check

PositiveInt = Annotated[Int, Field(ge=1)]
Positive = Annotated[Float, Field(gt=0)]


class Schedule(ConfigModel):
    """One of Garg et al.'s curriculum schedules: ``start``, + ``inc`` every ``interval`` steps, up to ``end``."""

    start: PositiveInt
    end: PositiveInt
    inc: PositiveInt = 1
    interval: PositiveInt = 2000

    @model_validator(mode="after")
    def _ordered(self) -> Schedule:
        check(self.start <= self.end, "start", f"must be <= end = {self.end}, got {self.start}")
        return self

    def at(self, step: int) -> int:
        """The value at optimizer step ``step`` (1-based; Garg's ``Curriculum`` after ``step − 1`` updates)."""
        return min(self.start + ((step - 1) // self.interval) * self.inc, self.end)


class Curriculum(ConfigModel):
    """Garg et al.'s curriculum: the active input dimensions (the rest of x zeroed) and the pairs per prompt
    grow during training. Their standard run: dims 5 → 20 (+1 every 2,000 steps), points 11 → 41 (+2)."""

    dims: Schedule | None = None
    points: Schedule | None = None


class ICLTaskConfig(ConfigModel):
    """Prompts of ``points`` (x, y) pairs, every y_i predicted from the pairs before it.

    The distribution is the regression family's (:class:`~unrolled.tasks.regression.RegressionConfig`):
    ``covariance`` (isotropic, the Memformer paper's rotated, Garg's skewed with ``skew``, mixture),
    ``variance`` σ², ``label_noise`` (std), ``sparsity`` (k non-zero coordinates of w*). ``curriculum``:
    Garg's schedules; the final values must be ``d`` and ``points`` (the evaluated task).
    """

    kind: Literal["icl"] = "icl"
    d: PositiveInt = 5
    points: Annotated[Int, Field(ge=2)] = 11
    covariance: Covariance = "isotropic"
    scales: tuple[Positive, ...] | None = None
    skew: Annotated[Float, Field(ge=0)] = 1.0
    variance: Positive = 1.0
    label_noise: Annotated[Float, Field(ge=0)] = 0.0
    sparsity: PositiveInt | None = None
    mixture: Annotated[tuple[MixtureComponent, ...], Field(min_length=1)] | None = None
    curriculum: Curriculum = Curriculum()

    @model_validator(mode="after")
    def _consistent(self) -> ICLTaskConfig:
        self.regression()  # the distribution's own checks, with these keys
        c = self.curriculum
        if c.dims is not None:
            check(c.dims.end == self.d, "curriculum.dims.end", f"must be d = {self.d}, got {c.dims.end}")
        if c.points is not None:
            check(
                c.points.end == self.points,
                "curriculum.points.end",
                f"must be points = {self.points}, got {c.points.end}",
            )
        return self

    def regression(self, **changes: Any) -> RegressionConfig:
        """The prompt distribution as a :class:`RegressionConfig` (n = points − 1 context pairs + a query)."""
        data = {
            "d": self.d,
            "n": self.points - 1,
            "covariance": self.covariance,
            "scales": self.scales,
            "skew": self.skew,
            "variance": self.variance,
            "label_noise": self.label_noise,
            "sparsity": self.sparsity,
            "mixture": to_dict(self.mixture) if self.mixture is not None else None,
        }
        data.update(changes)
        return from_dict(RegressionConfig, data)


class LearnerMethod(ConfigModel):
    """A softmax in-context learner and how it is trained.

    kinds: ``gpt2`` (Garg et al.'s: a read-in, ``transformers.GPT2Model``, a read-out; the ``hf`` extra) or
    ``ut`` (the Unrolled Transformer, causal, on the same tokens). ``width``, ``depth``, ``heads`` are the
    backbone's (Garg's tiny: 64, 3, 2). ``constraints``: layerwise descent constraints on the shared readout
    (primal-dual); ``early_exit``: LayerSkip's early-exit loss; neither: ERM. ``baseline`` names the ERM method
    a layerwise method is paired with in the shift table. ``steps`` overrides ``train.steps``.
    """

    name: Str
    kind: Literal["gpt2", "ut"]
    width: PositiveInt = 64
    depth: PositiveInt = 3
    heads: PositiveInt = 2
    activation: Literal["gelu", "relu", "tanh", "identity"] = "relu"
    constraints: ConstraintConfig | None = None
    early_exit: EarlyExitConfig | None = None
    baseline: Str | None = None
    steps: PositiveInt | None = None
    label: Str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LearnerMethod:
        check(self.width % self.heads == 0, "heads", f"must divide width {self.width}")
        check(
            self.constraints is None or self.early_exit is None,
            "early_exit",
            "a method takes constraints or early_exit, not both",
        )
        return self

    @property
    def layerwise(self) -> bool:
        """Whether it is trained with a layerwise objective (constraints or the early-exit loss)."""
        return self.constraints is not None or self.early_exit is not None


class BaselineConfig(ConfigModel):
    """The classical in-context regressors every prompt is also solved with (:mod:`unrolled.solvers.prefix`).

    ``ridge_grid`` / ``lasso_grid``: λ and α tried on the validation prompts (Lasso only when the task is
    sparse). ``newton_steps``, ``cg_steps``: iterations read out (0..K). ``gd_steps``: the iteration counts of
    GD read out, with Fu et al.'s fixed step ``gd_lr`` on ½‖Xw − y‖² (their 0.01); ``gd_tuned_steps``: the
    counts at which GD with a step tuned per count (on (1/2i)‖X_i w − y_i‖²) is also reported.
    """

    ridge_grid: Annotated[tuple[Positive, ...], Field(min_length=1)] = (
        1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0,
    )  # fmt: skip
    lasso_grid: Annotated[tuple[Positive, ...], Field(min_length=1)] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
    lasso_steps: PositiveInt = 2000
    newton_steps: PositiveInt = 16
    cg_steps: PositiveInt | None = None
    gd_lr: Positive = 0.01
    gd_steps: Annotated[tuple[Annotated[Int, Field(ge=0)], ...], Field(min_length=1)] = tuple(
        [0] + [2**k for k in range(13)]
    )
    gd_tuned_steps: tuple[PositiveInt, ...] = (1, 2, 4, 8, 16, 32)


class ShiftFamily(ConfigModel):
    """A family of test distributions whose size can be dialled; each size is one evaluated split.

    kinds and what ``sizes`` are:
      * ``variance``: σ² of x and w* (the Memformer paper's {0.5, 1.5, 2.5, 3.5}; 1 is the training task
        when it has σ² = 1);
      * ``skew``: the exponent p of Garg's skewed covariance, eigenvalues of x's transform (i + 1)^(−p)
        (Garg's is p = 1; 0 is isotropic);
      * ``label_noise``: the std of noise added to every label;
      * ``points``: prompts of that many pairs, longer than any seen in training;
      * ``mixture``: the Memformer paper's Gaussian mixture of x (0.2 N(2.5, 0.5) + 0.3 N(0, 1) +
        0.5 N(−1, 2), or ``mixture``) with its means multiplied by the size (0: centred components).
    """

    kind: Literal["variance", "skew", "label_noise", "points", "mixture"]
    sizes: Annotated[tuple[Annotated[Float, Field(ge=0)], ...], Field(min_length=1)]
    mixture: Annotated[tuple[MixtureComponent, ...], Field(min_length=1)] | None = None

    DEFAULT_MIXTURE: ClassVar[tuple[tuple[float, float, float], ...]] = (
        (2.5, 0.5, 0.2),
        (0.0, 1.0, 0.3),
        (-1.0, 2.0, 0.5),
    )

    def split(self, size: float) -> str:
        """The split's name, e.g. ``shift:variance=2.5``."""
        return f"shift:{self.kind}={size:g}"

    def task(self, base: ICLTaskConfig, size: float) -> tuple[RegressionConfig, int]:
        """The shifted distribution and its prompt length."""
        if self.kind == "points":
            check(
                size == int(size) and size >= 2,
                "sizes",
                f"prompt lengths must be integers >= 2, got {size:g}",
            )
            return base.regression(n=int(size) - 1), int(size)
        if self.kind == "variance":
            check(size > 0, "sizes", "variances must be > 0")
            return base.regression(variance=size), base.points
        if self.kind == "skew":
            cov = "skewed" if size > 0 else base.covariance
            return base.regression(covariance=cov, skew=size, scales=None), base.points
        if self.kind == "label_noise":
            return base.regression(label_noise=size), base.points
        comps = self.mixture or tuple(
            MixtureComponent(mean=m, variance=v, weight=w) for m, v, w in self.DEFAULT_MIXTURE
        )
        scaled = [{"mean": c.mean * size, "variance": c.variance, "weight": c.weight} for c in comps]
        return base.regression(covariance="mixture", mixture=scaled, scales=None), base.points


class ReadingConfig(ConfigModel):
    """Reading the layers (Fu et al.): probes fitted on ``probe_prompts`` held-out prompts, similarities of
    residuals on ``prompts`` test prompts (a subset of the test split)."""

    probe_prompts: PositiveInt = 2000
    prompts: PositiveInt = 1000


class ICLEvalConfig(ConfigModel):
    """``prompts`` fresh test prompts per split and seed (the same for every method), ``validation`` prompts to
    tune the baselines, ``shifts`` (families of test distributions), ``reading`` (the layer reading).

    ``curve_every``: every that many steps (a multiple of ``train.log_every``), the learner's error at every
    prompt length on ``curve_prompts`` held-out prompts is logged (the learning curve of the report).
    """

    prompts: PositiveInt = 5000
    validation: PositiveInt = 2000
    shifts: tuple[ShiftFamily, ...] = ()
    reading: ReadingConfig | None = ReadingConfig()
    curve_every: PositiveInt | None = None
    curve_prompts: PositiveInt = 1000

    @model_validator(mode="after")
    def _distinct(self) -> ICLEvalConfig:
        kinds = [s.kind for s in self.shifts]
        dup = sorted({k for k in kinds if kinds.count(k) > 1})
        check(
            not dup, "shifts", f"one entry per kind, repeated: {', '.join(dup)} (list all its sizes in one)"
        )
        return self


class ICLExperiment(ExperimentConfig):
    """Softmax in-context learners (GPT-2, UT) against least squares, ridge, Newton, GD, CG and Lasso at every
    prompt length, their layers read as iterations, trained with and without layerwise objectives, and
    tested under shifts of growing size."""

    task: ICLTaskConfig
    methods: Annotated[tuple[LearnerMethod, ...], Field(min_length=1)]
    train: TrainConfig = TrainConfig(batch_size=64, lr=1e-4, steps=5000, log_every=100, checkpoint_every=500)
    eval: ICLEvalConfig = ICLEvalConfig()
    baselines: BaselineConfig = BaselineConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ICLExperiment:
        names = {m.name for m in self.methods}
        for i, m in enumerate(self.methods):
            check(m.name != "baselines", f"methods[{i}].name", "'baselines' names every seed's baseline unit")
            if m.baseline is not None:
                check(m.baseline in names, f"methods[{i}].baseline", f"no method named {m.baseline!r}")
        check(self.train.protocol == "online", "train.protocol", "in-context learners train online")
        if self.eval.curve_every is not None:
            check(
                self.eval.curve_every % self.train.log_every == 0,
                "eval.curve_every",
                f"must be a multiple of train.log_every = {self.train.log_every} (curves go on log lines)",
            )
        for i, family in enumerate(self.eval.shifts):
            for size in family.sizes:
                try:
                    family.task(self.task, size)
                except Exception as exc:  # a shifted task that does not validate names its entry
                    raise type(exc)(f"eval.shifts[{i}] (size {size:g}): {exc}") from None
        return self

    @property
    def max_points(self) -> int:
        """The longest prompt any split has (the learners get positions for it)."""
        longest = [int(s) for f in self.eval.shifts if f.kind == "points" for s in f.sizes]
        return max([self.task.points, *longest])

    def splits(self) -> dict[str, tuple[RegressionConfig, int]]:
        """Every evaluated split: ``test`` and one per shift size, with its distribution and prompt length."""
        out = {"test": (self.task.regression(), self.task.points)}
        for family in self.eval.shifts:
            for size in family.sizes:
                out[family.split(size)] = family.task(self.task, size)
        return out
