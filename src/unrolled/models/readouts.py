"""Readouts shared by every layer of a token model: a pooled classifier, and the logit lens of a language model.

A readout turns any layer's hidden states ``[B, T, H]`` into a prediction, so a loss can be read after every
layer (the layerwise losses the descent constraints act on). Two kinds:

* :class:`PooledClassifier`: pool the real tokens (mean over the attention mask, or the first token), then a
  linear layer: ``[B, T, H] -> [B, C]``. Padding never reaches the pooled state.
* :class:`LogitLens`: a language model's final norm and LM head applied to any layer, ``[B, T, H] -> [B, T,
  V]``. A vocabulary makes this readout large (SmolLM2: 49,152 × 576 per token, about eight of its layers),
  so :meth:`LogitLens.sample_losses` computes the token cross-entropy chunk by chunk, over the trained
  tokens only, and recomputes each chunk's logits in the backward pass: no ``[B, T, V]`` tensor, let alone
  ``[L, B, T, V]``, is ever held.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from unrolled.constrained.subsample import subsample

Pooling = Literal["mean", "first"]
IGNORE_INDEX = -100
"""Labels equal to this are not trained on (the Hugging Face convention)."""


def pool(states: Tensor, mask: Tensor | None, pooling: Pooling = "mean") -> Tensor:
    """One vector per sequence: ``[B, T, H] -> [B, H]``.

    Args:
        states: hidden states ``[B, T, H]``.
        mask: ``[B, T]``, 1 on real tokens and 0 on padding (None: every token is real).
        pooling: ``mean`` over the real tokens, or the ``first`` token (``[CLS]`` / ``<s>``).
    """
    if pooling == "first":
        return states[:, 0]
    if pooling != "mean":
        raise ValueError(f"pooling must be 'mean' or 'first', got {pooling!r}")
    if mask is None:
        return states.mean(dim=1)
    weights = mask.to(states.dtype).unsqueeze(-1)  # padding contributes exactly 0
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class PooledClassifier(nn.Module):
    """Pool, dropout, linear: ``([B, T, H], mask [B, T]) -> logits [B, C]``, one head for every layer.

    Args:
        hidden: H.
        num_labels: C.
        pooling: see :func:`pool`.
        dropout: on the pooled vector (training only).
        generator: initialises the linear layer, N(0, 0.02²) weights and zero bias (as BERT's heads).
    """

    def __init__(
        self,
        hidden: int,
        num_labels: int,
        pooling: Pooling = "mean",
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.pooling = pooling
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, num_labels)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=generator) * 0.02)
            self.linear.bias.zero_()

    def forward(self, states: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.linear(self.drop(pool(states, mask, self.pooling)))


def sequence_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy ``[B]`` of class logits ``[B, C]`` against labels ``[B]``."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


class LogitLens:
    """The readout of a language model at any layer: ``logits = head(norm(h))``.

    Args:
        norm: the model's final norm (Llama's RMSNorm, GPT-2's ``ln_f``, BERT's MLM transform), or None.
        head: the LM head, ``[*, H] -> [*, V]``.
        shift: causal LMs predict token t + 1 at position t (labels are shifted); masked LMs do not.
        chunk_tokens: tokens per chunk of the memory-efficient cross-entropy.
    """

    def __init__(
        self, norm: nn.Module | None, head: nn.Module, shift: bool = True, chunk_tokens: int = 1024
    ) -> None:
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        self.norm, self.head, self.shift, self.chunk_tokens = norm, head, shift, chunk_tokens

    def __call__(self, states: Tensor) -> Tensor:
        """Logits ``[B, T, V]`` of one layer (materialised: for predictions, not for losses)."""
        return self.head(self.norm(states) if self.norm is not None else states)

    def _targets(self, states: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The hidden states of the trained tokens ``[N, H]``, their targets ``[N]`` and sample index ``[N]``."""
        if self.shift:
            states, labels = states[:, :-1], labels[:, 1:]
        if states.shape[:2] != labels.shape:
            raise ValueError(
                f"labels {tuple(labels.shape)} do not match the tokens {tuple(states.shape[:2])}"
            )
        keep = labels != IGNORE_INDEX
        rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)
        return states[keep], labels[keep], rows[keep]

    def _chunk_loss(self, h: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self(h).float(), y, reduction="none")

    def token_mean(
        self, states: Tensor, labels: Tensor, fraction: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """The mean cross-entropy over the trained tokens (a scalar), exactly or from a random subset.

        With ``fraction`` < 1, ``max(1, round(fraction · N))`` of the N trained tokens are drawn uniformly
        without replacement (from ``generator``) and only they are read out: an unbiased estimate of the
        exact mean, at that fraction of the readout's cost.
        """
        h, y, _ = self._targets(states, labels)
        if y.numel() == 0:
            return states.sum() * 0.0  # no trained token: a differentiable zero
        pick = subsample(y.numel(), fraction, generator)
        if pick is not None:
            pick = pick.to(y.device)
            h, y = h[pick], y[pick]
        grad = torch.is_grad_enabled() and h.requires_grad
        total = h.new_zeros((), dtype=torch.float32)
        for start in range(0, y.numel(), self.chunk_tokens):
            hc, yc = h[start : start + self.chunk_tokens], y[start : start + self.chunk_tokens]
            part = (
                checkpoint(self._chunk_loss, hc, yc, use_reentrant=False)
                if grad
                else self._chunk_loss(hc, yc)
            )
            total = total + part.sum()
        return total / y.numel()

    def token_losses(self, states: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-entropy of every trained token, chunk by chunk: (losses ``[N]``, targets ``[N]``, rows ``[N]``).

        With gradients on, each chunk's logits are recomputed in the backward pass instead of being kept, so
        memory holds one chunk of ``[chunk_tokens, V]`` at a time.
        """
        h, y, rows = self._targets(states, labels)
        grad = torch.is_grad_enabled() and h.requires_grad
        parts = []
        for start in range(0, y.numel(), self.chunk_tokens):
            hc, yc = h[start : start + self.chunk_tokens], y[start : start + self.chunk_tokens]
            parts.append(
                checkpoint(self._chunk_loss, hc, yc, use_reentrant=False)
                if grad
                else self._chunk_loss(hc, yc)
            )
        losses = torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)
        return losses, y, rows

    def sample_losses(self, states: Tensor, labels: Tensor) -> Tensor:
        """Per-sample losses ``[B]`` whose batch mean is the mean cross-entropy over all trained tokens.

        Sample b gets ``B · (sum of its tokens' losses) / N`` (N: trained tokens in the batch), so the
        objectives' ``mean()`` over samples is the token mean, as in Hugging Face's causal-LM loss.
        """
        losses, _, rows = self.token_losses(states, labels)
        batch = states.shape[0]
        sums = torch.zeros(batch, dtype=losses.dtype, device=losses.device).index_add(0, rows, losses)
        return sums * (batch / max(losses.numel(), 1))

    @torch.no_grad()
    def evaluate(self, states: Tensor, labels: Tensor) -> tuple[float, int, int]:
        """(sum of token losses, correct next-token predictions, trained tokens) of one layer, chunked."""
        h, y, _ = self._targets(states, labels)
        loss_sum, correct = 0.0, 0
        for start in range(0, y.numel(), self.chunk_tokens):
            logits = self(h[start : start + self.chunk_tokens]).float()
            yc = y[start : start + self.chunk_tokens]
            loss_sum += float(F.cross_entropy(logits, yc, reduction="sum"))
            correct += int((logits.argmax(dim=-1) == yc).sum())
        return loss_sum, correct, int(y.numel())
