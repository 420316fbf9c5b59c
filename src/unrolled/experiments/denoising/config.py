"""The config of video-denoising experiments: denoisers, their training, the noise and its test grid."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from unrolled.config import ConfigModel, Float, Int, Str
from unrolled.constrained.config import ConstraintConfig
from unrolled.experiments.config import ExperimentConfig
from unrolled.perturb import PerturbationConfig
from unrolled.tasks.video.config import VideoDataConfig
from unrolled.train.config import TrainConfig
from unrolled.validation import check

PositiveInt = Annotated[Int, Field(ge=1)]


class DenoiserMethod(ConfigModel):
    """A video denoiser: space-time patch tokens, a backbone, and a shared linear patch decoder as readout.

    kinds: ``ut`` (the unrolled transformer, untied layers Φ_l = σ(W_l Z_l + U_l X_{l−1})) or ``vit``
    (pre-norm transformer blocks). ``patch`` is (frames, rows, columns) per token. ``activation``, ``norm``
    and ``init`` apply to the UT, ``mlp_ratio`` to the ViT. ``constraints`` trains under layerwise descent
    constraints (primal-dual) instead of ERM.
    """

    name: Str
    kind: Literal["ut", "vit"]
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
    constraints: ConstraintConfig | None = None
    label: Str | None = None

    @model_validator(mode="after")
    def _heads_divide_width(self) -> DenoiserMethod:
        check(self.width % self.heads == 0, "heads", f"must divide width {self.width}")
        return self


class DenoisingExperiment(ExperimentConfig):
    """Video denoising: each denoiser trained at one noise level, tested on held-out videos over a γ grid.

    ``published`` holds the paper's RMSE per method, keyed by test γ (``{0.0: 3.8, 1.5: 42.6}``).
    """

    task: VideoDataConfig
    methods: Annotated[tuple[DenoiserMethod, ...], Field(min_length=1)]
    train: TrainConfig = TrainConfig()
    perturbation: PerturbationConfig = PerturbationConfig()
    published: dict[Str, dict[float, Float]] | None = None
