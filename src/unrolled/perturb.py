"""Perturbations of inputs or embeddings, at train time, test time or both, and robustness sweeps.

Two noise families (Porras-Valenzuela, Hadou & Ribeiro, arXiv 2601.17257; Jain et al. 2023, NEFTune):

* ``gaussian``: x + ε, ε ~ N(μ, (γ σ)²) with σ the data's standard deviation (given, e.g. measured once on
  the training set, or else the standard deviation of the batch being perturbed);
* ``uniform`` (NEFTune scaling): x + ε, ε ~ U(−1, 1) · γ / √(N · D) for a sample of N tokens of width D
  (for any other shape, N · D is the number of entries of one sample).

γ = 0 with μ = 0 leaves the input bit-for-bit unchanged, so a sweep's γ = 0 point is the clean metric.
:class:`EmbeddingNoise` applies a perturbation to a module's output (an embedding layer: ``Φ_0`` of our own
models, or ``get_input_embeddings()`` of a Hugging Face model) through a forward hook, at train time
(``module.training``), at test time, or both. :class:`LayerNoise` perturbs intermediate layer outputs in
training (Hadou et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from unrolled.config import ConfigModel, Float

NoiseKind = Literal["gaussian", "uniform"]
When = Literal["train", "test", "both"]


@dataclass(frozen=True)
class Perturbation:
    """Additive noise of level ``gamma``.

    Attributes:
        kind: ``gaussian`` or ``uniform`` (NEFTune scaling).
        gamma: the level γ ≥ 0.
        mean: μ of the Gaussian family (0 by default).
        sigma: the data's standard deviation for the Gaussian family; None: the perturbed batch's own.
    """

    kind: NoiseKind = "gaussian"
    gamma: float = 0.0
    mean: float = 0.0
    sigma: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "uniform"):
            raise ValueError(f"noise kind must be 'gaussian' or 'uniform', got {self.kind!r}")
        if not self.gamma >= 0:
            raise ValueError(f"noise level gamma must be >= 0, got {self.gamma}")
        if self.sigma is not None and not self.sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")

    def with_gamma(self, gamma: float) -> Perturbation:
        return Perturbation(self.kind, gamma, self.mean, self.sigma)

    def noise(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The noise ε for ``x`` ``[B, ...]`` (same shape), drawn on the CPU from ``generator``."""
        shape = x.shape
        if self.kind == "gaussian":
            sigma = self.sigma if self.sigma is not None else float(x.detach().float().std())
            g = torch.randn(shape, generator=generator, dtype=torch.float32)
            eps = self.mean + self.gamma * sigma * g
        else:
            per_sample = math.prod(shape[1:]) if len(shape) > 1 else 1
            u = torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1
            eps = u * (self.gamma / math.sqrt(per_sample))
        return eps.to(device=x.device, dtype=x.dtype)

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x + ε; exactly ``x`` when γ = 0 and μ = 0."""
        if self.gamma == 0 and self.mean == 0:
            return x
        return x + self.noise(x, generator)


class EmbeddingNoise:
    """Adds a perturbation to a module's output through a forward hook (NEFTune-style, but any family/time).

    Args:
        module: the embedding module (its output ``[B, N, D]`` is perturbed).
        perturbation: the noise.
        when: ``train`` (only while ``module.training``, as NEFTune), ``test`` (only in eval mode) or ``both``.
        generator: random generator for the noise (seed it for reproducible sweeps).

    Use as a context manager or call :meth:`remove`.
    """

    def __init__(
        self,
        module: nn.Module,
        perturbation: Perturbation,
        when: When = "train",
        generator: torch.Generator | None = None,
    ) -> None:
        if when not in ("train", "test", "both"):
            raise ValueError(f"when must be 'train', 'test' or 'both', got {when!r}")
        self.perturbation, self.when, self.generator = perturbation, when, generator
        self._handle = module.register_forward_hook(self._hook)

    def _active(self, module: nn.Module) -> bool:
        return self.when == "both" or (self.when == "train") == module.training

    def _hook(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        if not self._active(module):
            return output
        return self.perturbation.apply(output, self.generator)

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> EmbeddingNoise:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class LayerNoise:
    """Noise on the outputs of intermediate layers during training (Hadou et al., "Robust Stochastically-
    Descending Unrolled Networks", IEEE TSP 2024): layer l's output gets ε_l ~ N(0, (c_l · std(Φ_l))²) with
    c_l = ``scale`` · ``decay``^(l−1), so later layers are perturbed less.

    The noise is relative to the batch's own state std (the states of different models and layers live at
    different scales) and goes into the state the next layer reads, so it propagates. It is added only while
    the layer is in training mode; the last layer (the model's output) is never perturbed.

    Args:
        layers: the model's layers in order (``model.layers``), ``L`` modules returning their state.
        scale: c_1 ≥ 0; decay: the factor per layer (0 < decay ≤ 1).
        generator: random generator for the noise (None: torch's global one).

    Use as a context manager or call :meth:`remove`.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        scale: float,
        decay: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        if not scale >= 0:
            raise ValueError(f"layer noise scale must be >= 0, got {scale}")
        if not 0 < decay <= 1:
            raise ValueError(f"layer noise decay must be in (0, 1], got {decay}")
        self.scales = [scale * decay**l for l in range(len(layers) - 1)]
        self.generator = generator
        self._handles = [
            layer.register_forward_hook(self._hook(c))
            for layer, c in zip(layers[:-1], self.scales, strict=True)
        ]

    def _hook(self, c: float) -> Callable[[nn.Module, Any, Tensor], Tensor]:
        def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            if not module.training or c == 0:
                return output
            return Perturbation("gaussian", c).apply(output, self.generator)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> LayerNoise:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class LayerNoiseConfig(ConfigModel):
    """Training-time noise on intermediate layer outputs (:class:`LayerNoise`): c_l = scale · decay^(l−1)."""

    scale: Annotated[Float, Field(ge=0)] = 0.1
    decay: Annotated[Float, Field(gt=0, le=1)] = 0.5


def robustness_sweep(evaluate: Callable[[float], float], gammas: Sequence[float]) -> dict[float, float]:
    """The metric at every test noise level: ``{γ: evaluate(γ)}`` (``evaluate`` perturbs at level γ)."""
    if not gammas:
        raise ValueError("the γ grid is empty")
    return {float(g): float(evaluate(float(g))) for g in gammas}


#: The test perturbation grid of the paper's video-denoising figure.
VIDEO_GAMMAS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5)


class PerturbationConfig(ConfigModel):
    """Input noise of an experiment: x̃ = x + ε, ε ~ N(μ, (γ σ)²) (or NEFTune-scaled uniform noise).

    σ is the training data's standard deviation, measured once. Training uses ``train_gamma``; the
    robustness sweep evaluates at every ``test_gammas`` level (the paper's video grid by default). ``target:
    embedding`` perturbs the embedding Φ_0 instead of the input (σ: the embedding batch's own std; at train
    time through a forward hook whose random stream is not checkpointed, so only ``input`` runs resume bit
    for bit).
    """

    kind: NoiseKind = "gaussian"
    train_gamma: Annotated[Float, Field(ge=0)] = 0.25
    mean: Float = 0.0
    target: Literal["input", "embedding"] = "input"
    test_gammas: Annotated[tuple[Annotated[Float, Field(ge=0)], ...], Field(min_length=1)] = VIDEO_GAMMAS
