"""Exit rules: when a sample may stop after layer l (issue 31).

A rule sees, for the samples still running, the prediction of the layer just run and of the one before, and
says which of them are done. Rules keep per-sample state (PABEE's counter) as batch-first tensors, so the
runner can drop the finished samples from the batch (:mod:`unrolled.exits.runner`).

* :class:`FixedDepth` — every sample stops after layer k.
* :class:`Confidence` — the largest softmax probability reaches a threshold (CALM's softmax confidence).
* :class:`Entropy` — the softmax entropy falls under a threshold (DeeBERT, Xin et al. 2020).
* :class:`Patience` — the argmax has not changed for ``patience`` consecutive layers (PABEE, Zhou et al. 2020).
* :class:`SmallStep` — the optimizer's stopping rule: ``‖ŷ_l − ŷ_{l−1}‖ ≤ tol · ‖ŷ_l‖`` (regression, denoising).

Each rule has one threshold (:attr:`ExitRule.threshold`) that :func:`unrolled.exits.calibrate` sweeps;
``rule.with_threshold(t)`` is the same rule at another threshold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class ExitRule:
    """Base of the exit rules. ``min_layer``: no sample stops before this layer (>= 1)."""

    min_layer: int = 1

    #: whether the rule reads the prediction of every layer (False: only of the layer it stops at).
    needs_readout = True
    #: the name of the swept parameter; larger values of it exit later for every rule but :class:`FixedDepth`
    #: (see :attr:`later_is_larger`).
    threshold_name = "threshold"
    later_is_larger = True

    def __post_init__(self) -> None:
        if self.min_layer < 1:
            raise ValueError(f"min_layer must be >= 1, got {self.min_layer}")

    @property
    def threshold(self) -> float:
        return float(getattr(self, self.threshold_name))

    def with_threshold(self, value: float) -> ExitRule:
        """This rule with its threshold set to ``value``."""
        return dataclasses.replace(
            self, **{self.threshold_name: type(getattr(self, self.threshold_name))(value)}
        )

    def start(self, batch: int, device: torch.device) -> dict[str, Tensor]:
        """The per-sample state before layer 1 (tensors with a leading batch dimension)."""
        return {}

    def done(
        self, layer: int, prediction: Tensor | None, previous: Tensor | None, state: dict[str, Tensor]
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """After ``layer``: which of the running samples stop (bool ``[b]``, or None: none of them by this
        rule), and the rule's new state. ``prediction``, ``previous``: ``[b, ...]`` (None when the rule does
        not need readouts)."""
        raise NotImplementedError

    def stop_layer(self, depth: int) -> int:
        """The layer after which every sample still running stops, in a model of ``depth`` layers."""
        return depth

    def describe(self) -> str:
        return f"{type(self).__name__} ({self.threshold_name} = {self.threshold:g})"


@dataclass(frozen=True)
class FixedDepth(ExitRule):
    """Stop every sample after ``layers`` layers (the model truncated)."""

    layers: int = 1
    needs_readout = False
    threshold_name = "layers"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")

    def done(self, layer, prediction, previous, state):  # type: ignore[no-untyped-def]
        return None, state

    def stop_layer(self, depth: int) -> int:
        return min(max(self.layers, self.min_layer), depth)


def _probabilities(logits: Tensor) -> Tensor:
    if logits.dim() != 2:
        raise ValueError(
            f"confidence and entropy rules read class logits [b, C], got a prediction {tuple(logits.shape)}"
        )
    return logits.float().softmax(dim=-1)


@dataclass(frozen=True)
class Confidence(ExitRule):
    """Stop when the largest class probability is at least ``threshold`` (in (0, 1])."""

    threshold_value: float = 0.9
    threshold_name = "threshold_value"

    def done(self, layer, prediction, previous, state):  # type: ignore[no-untyped-def]
        return _probabilities(prediction).amax(dim=-1) >= self.threshold_value, state


@dataclass(frozen=True)
class Entropy(ExitRule):
    """Stop when the entropy of the class probabilities (nats) is at most ``threshold`` (DeeBERT)."""

    threshold_value: float = 0.1
    threshold_name = "threshold_value"
    later_is_larger = False

    def done(self, layer, prediction, previous, state):  # type: ignore[no-untyped-def]
        p = _probabilities(prediction)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1)
        return entropy <= self.threshold_value, state


@dataclass(frozen=True)
class Patience(ExitRule):
    """PABEE: stop when the predicted class has been the same for ``patience`` consecutive layers.

    The counter starts at 0 after layer 1 (whose internal classifier has no predecessor), grows by one at each
    layer whose argmax equals the previous layer's and resets to 0 when it changes; a sample stops when it
    reaches ``patience`` (Zhou et al. 2020, Alg. 1)."""

    patience: int = 2
    threshold_name = "patience"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    def start(self, batch, device):  # type: ignore[no-untyped-def]
        return {"count": torch.zeros(batch, dtype=torch.long, device=device)}

    def done(self, layer, prediction, previous, state):  # type: ignore[no-untyped-def]
        if prediction.dim() != 2:
            raise ValueError(
                f"patience reads class logits [b, C], got a prediction {tuple(prediction.shape)}"
            )
        count = state["count"]
        if layer > 1 and previous is not None:
            same = prediction.argmax(dim=-1) == previous.argmax(dim=-1)
            count = torch.where(same, count + 1, torch.zeros_like(count))
        return count >= self.patience, {"count": count}


@dataclass(frozen=True)
class SmallStep(ExitRule):
    """The optimizer's stopping rule: stop when ``‖ŷ_l − ŷ_{l−1}‖ ≤ tol · ‖ŷ_l‖`` (norms over each sample's
    prediction; ``tol`` > 0). For regression, denoising and in-context learners."""

    tol: float = 0.01
    threshold_name = "tol"
    later_is_larger = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")

    def done(self, layer, prediction, previous, state):  # type: ignore[no-untyped-def]
        if previous is None:
            return None, state
        flat, prev = prediction.reshape(prediction.shape[0], -1), previous.reshape(previous.shape[0], -1)
        step = torch.linalg.vector_norm((flat - prev).float(), dim=1)
        size = torch.linalg.vector_norm(flat.float(), dim=1)
        return step <= self.tol * size, state


RULES: dict[str, type[ExitRule]] = {
    "fixed": FixedDepth,
    "confidence": Confidence,
    "entropy": Entropy,
    "patience": Patience,
    "small_step": SmallStep,
}


def make_rule(kind: str, threshold: float, **kwargs: Any) -> ExitRule:
    """A rule by name (``fixed``, ``confidence``, ``entropy``, ``patience``, ``small_step``) at ``threshold``."""
    if kind not in RULES:
        raise ValueError(f"unknown exit rule {kind!r}; one of {', '.join(RULES)}")
    return RULES[kind](**kwargs).with_threshold(threshold)
