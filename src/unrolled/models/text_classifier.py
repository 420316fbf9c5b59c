"""The Unrolled Transformer as a text classifier: token embeddings, UT layers, one pooled head for every layer.

``UTTextClassifier(input_ids [B, T], attention_mask [B, T]) -> Trajectory`` of states ``[B, T, D]``:

* Φ_0 = E[x_t] (projected to the width D when the table is narrower or wider) + a learned position p_t;
* Φ_1 … Φ_L: untied UT layers (:class:`~unrolled.models.unrolled_transformer.UnrolledTransformer`) whose
  attention never looks at padding;
* the readout of every state: the mean of its real tokens, then a linear layer (a
  :class:`~unrolled.models.readouts.PooledClassifier`).

The token embeddings E are ``scratch`` (a new table, trained) or ``pretrained`` (a pretrained model's input
embeddings, copied and frozen, followed by a trained linear map to D). The default in the experiment's configs
is ``pretrained`` from MiniLM, with MiniLM's tokenizer: on a few hundred training texts a table learnt from
scratch sees too few tokens to be useful, and frozen embeddings put the UT and the pretrained encoder on the
same input space, so they differ only in their layers. Embedding noise acts on E's output (before the
projection), as for the pretrained encoders.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from unrolled.models.readouts import PooledClassifier, sequence_cross_entropy
from unrolled.models.unrolled_transformer import Activation, UnrolledTransformer, init_normal
from unrolled.trajectory import Trajectory


class UTTextClassifier(nn.Module):
    """Embeddings -> UT layers -> a pooled linear head shared by every layer (see the module docstring).

    Args:
        vocab_size: tokens in the tokenizer's vocabulary.
        num_labels: classes C.
        width, depth, heads: D, L, H of the UT.
        max_length: the longest sequence (positions are learned).
        embeddings: ``scratch`` or ``pretrained`` (then pass ``pretrained``: an ``nn.Embedding`` to copy).
        pretrained: the pretrained token-embedding table (``get_input_embeddings()`` of a model).
        activation, dropout, init_std: of the UT layers (see :class:`UnrolledTransformer`).
        pad_token_id: the padding token (its scratch embedding is zero).
        generator: random generator for every initialisation.
    """

    per_sample_loss = staticmethod(sequence_cross_entropy)

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        width: int = 128,
        depth: int = 6,
        heads: int = 4,
        max_length: int = 512,
        embeddings: Literal["scratch", "pretrained"] = "pretrained",
        pretrained: nn.Embedding | None = None,
        activation: Activation = "relu",
        dropout: float = 0.0,
        init_std: float = 0.02,
        pad_token_id: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.depth, self.width, self.embeddings_kind = depth, width, embeddings
        if embeddings == "pretrained":
            if pretrained is None:
                raise ValueError("embeddings 'pretrained' needs the pretrained table (pretrained=)")
            table = pretrained.weight.detach().clone()
            if table.shape[0] < vocab_size:
                raise ValueError(
                    f"the pretrained table has {table.shape[0]} tokens, the vocabulary {vocab_size}"
                )
            self.embed = nn.Embedding.from_pretrained(table, freeze=True, padding_idx=pad_token_id)
            self.project: nn.Module = (
                nn.Linear(table.shape[1], width) if table.shape[1] != width else nn.Identity()
            )
            if isinstance(self.project, nn.Linear):
                init_normal(self.project.weight, table.shape[1] ** -0.5, generator)
                nn.init.zeros_(self.project.bias)
        elif embeddings == "scratch":
            self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_token_id)
            init_normal(self.embed.weight, 1.0, generator)
            with torch.no_grad():
                self.embed.weight[pad_token_id].zero_()
            self.project = nn.Identity()
        else:
            raise ValueError(f"embeddings must be 'scratch' or 'pretrained', got {embeddings!r}")
        self.position = nn.Embedding(max_length, width)
        init_normal(self.position.weight, init_std, generator)
        self.backbone = UnrolledTransformer(
            width,
            depth,
            heads,
            activation=activation,
            dropout=dropout,
            init_std=init_std,
            generator=generator,
        )
        self.head = PooledClassifier(width, num_labels, "mean", 0.0, generator)

    def get_input_embeddings(self) -> nn.Module:
        """The token-embedding table (where embedding noise is added)."""
        return self.embed

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **unused: Any) -> Trajectory:
        """States ``[B, T, D]`` and the pooled readout ``[B, C]``; ``token_type_ids`` and labels are ignored."""
        T = input_ids.shape[1]
        if self.position.num_embeddings < T:
            raise ValueError(
                f"sequence of {T} tokens; the model takes at most {self.position.num_embeddings}"
            )
        positions = torch.arange(T, device=input_ids.device)
        x0 = self.project(self.embed(input_ids)) + self.position(positions)[None]
        states = self.backbone(x0, attention_mask)
        head = self.head
        return Trajectory(states, lambda h: head(h, attention_mask))
