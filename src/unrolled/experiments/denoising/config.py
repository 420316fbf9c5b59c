"""The config of video-denoising experiments: denoisers, their training, the noise and its test grid."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from unrolled.config import Bool, ConfigModel, Float, Int, Str
from unrolled.constrained.config import ConstraintConfig
from unrolled.experiments.config import ExperimentConfig
from unrolled.perturb import LayerNoiseConfig, PerturbationConfig
from unrolled.tasks.video.config import VideoDataConfig
from unrolled.train.config import TrainConfig
from unrolled.validation import check

PositiveInt = Annotated[Int, Field(ge=1)]


class DenoiserMethod(ConfigModel):
    """A video denoiser: space-time patch tokens, layers that each read out a clip through a shared readout.

    kinds: ``ut`` (the unrolled transformer, untied layers Φ_l = σ(W_l Z_l + U_l X_{l−1})), ``vit`` (pre-norm
    transformer blocks), both with a shared linear patch decoder, or ``dust`` (unfolded sparse coding with
    temporal attention; ``width`` is its dictionary size K, the dictionary synthesis its readout; see
    :mod:`unrolled.models.dust`). ``patch`` is (frames, rows, columns) per token. ``activation``, ``norm`` and
    ``init`` apply to the UT, ``mlp_ratio`` to the ViT, ``attention`` and ``threshold`` to DUST.
    ``constraints`` trains under layerwise descent constraints (primal-dual) instead of ERM.

    Per-method overrides of the experiment (robustness studies): ``train_gamma`` (the training noise level),
    ``steps`` (the training budget), ``layer_noise`` (noise on intermediate layer outputs in training, Hadou et
    al. 2024). ``baseline`` names the ERM method a constrained one is compared with in the report's
    constrained − ERM figure.
    """

    name: Str
    kind: Literal["ut", "vit", "dust"]
    width: PositiveInt = 64
    depth: PositiveInt = 6
    heads: PositiveInt = 4
    patch: Annotated[tuple[PositiveInt, ...], Field(min_length=3, max_length=3)] = (2, 8, 8)
    activation: Literal["gelu", "relu", "tanh", "identity"] = "relu"
    norm: Literal["none", "layer"] = "layer"
    init: Literal["identity", "normal"] = "identity"
    init_std: Annotated[Float, Field(ge=0)] = 0.02
    mlp_ratio: Float = 4.0
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    attention: Bool = True
    threshold: Annotated[Float, Field(ge=0)] = 0.01
    constraints: ConstraintConfig | None = None
    train_gamma: Annotated[Float, Field(ge=0)] | None = None
    steps: PositiveInt | None = None
    layer_noise: LayerNoiseConfig | None = None
    baseline: Str | None = None
    label: Str | None = None

    @model_validator(mode="after")
    def _heads_divide_width(self) -> DenoiserMethod:
        check(self.width % self.heads == 0, "heads", f"must divide width {self.width}")
        return self


class TVReference(ConfigModel):
    """Total-variation denoising (scikit-image's Chambolle TV over space and time of each clip) as a reference.

    Its weight is chosen per test γ from ``weights`` (0: the noisy clip itself) by the RMSE on
    ``validation_clips`` fresh clips of the *training* videos, never on test clips.
    """

    weights: Annotated[tuple[Annotated[Float, Field(ge=0)], ...], Field(min_length=1)] = (
        0.0, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5,
    )  # fmt: skip
    validation_clips: PositiveInt = 64


class DenoisingExperiment(ExperimentConfig):
    """Video denoising: each denoiser trained at one noise level, tested on held-out videos over a γ grid.

    ``published`` holds the paper's RMSE per method, keyed by test γ (``{0.0: 3.8, 1.5: 42.6}``).
    """

    task: VideoDataConfig
    methods: Annotated[tuple[DenoiserMethod, ...], Field(min_length=1)]
    train: TrainConfig = TrainConfig()
    perturbation: PerturbationConfig = PerturbationConfig()
    tv_reference: TVReference | None = TVReference()
    published: dict[Str, dict[float, Float]] | None = None

    @model_validator(mode="after")
    def _baselines_exist(self) -> DenoisingExperiment:
        names = [m.name for m in self.methods]
        check(len(set(names)) == len(names), "methods", "method names must be unique")
        if self.tv_reference is not None:
            check("tv" not in names, "methods", "'tv' is the name of the TV reference; rename the method")
        erm = {m.name for m in self.methods if m.constraints is None}
        for i, m in enumerate(self.methods):
            if m.baseline is not None:
                check(m.baseline in erm, f"methods.{i}.baseline",
                      f"{m.baseline!r} is not an unconstrained method of this config ({sorted(erm)})")  # fmt: skip
        return self
