"""Tokenisation of :class:`TextExamples` for Hugging Face encoders, and batches with dynamic padding.

* :func:`encode`: the whole set at once, padded to its longest example and truncated to ``max_length``.
* :func:`batches`: minibatches of an encoded set, each trimmed to its own longest example (dynamic
  padding), shuffled by a ``torch.Generator`` when one is given. For a plain training loop.
* :class:`EncodedDataset`: a ``torch.utils.data.Dataset`` of unpadded examples (dicts of 1-D tensors and
  a 0-d label) with :meth:`EncodedDataset.collate` for ``DataLoader``; it also works with
  ``transformers.Trainer`` and ``DataCollatorWithPadding``.

Any tokenizer with the ``transformers`` call signature works (the tests use all-MiniLM-L6-v2's from
:func:`~unrolled.tasks.text.carriers.minilm_path`); the from-scratch model can use the same one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from unrolled.tasks.text.dataset import TextExamples

__all__ = ["SEQUENCE_KEYS", "EncodedDataset", "batches", "encode"]

SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids")
"""The per-token tensors :func:`encode` returns (``token_type_ids`` only when the tokenizer gives them)."""


def encode(examples: TextExamples, tokenizer: Any, max_length: int) -> dict[str, Tensor]:
    """Tokenise every example, padded to the longest and truncated to ``max_length`` tokens.

    Pairs are encoded as the tokenizer's pair template (``[CLS] a [SEP] b [SEP]`` for BERT, with
    ``token_type_ids`` 0 on the first segment and 1 on the second) and truncated longest-first.

    Args:
        examples: N examples.
        tokenizer: a ``transformers`` tokenizer (fast or slow).
        max_length: the most tokens per example, special tokens included.

    Returns:
        ``input_ids``, ``attention_mask`` (1 on tokens, 0 on padding) and, when the tokenizer gives them,
        ``token_type_ids``: int64 ``[N, T]`` with T the longest encoded length (<= ``max_length``);
        ``labels``: int64 ``[N]``.
    """
    labels = torch.tensor(examples.labels, dtype=torch.long)
    if len(examples) == 0:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return {"input_ids": empty, "attention_mask": empty.clone(), "labels": labels}
    encoded = tokenizer(
        list(examples.texts),
        list(examples.pairs) if examples.pairs is not None else None,
        padding="longest",
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )
    out = {key: encoded[key].long() for key in SEQUENCE_KEYS if key in encoded}
    out["labels"] = labels
    return out


def _trim(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the token columns that are padding in every row (either padding side)."""
    mask = batch["attention_mask"]
    if mask.numel() == 0:
        return dict(batch)
    used = mask.bool().any(dim=0).nonzero().flatten()
    lo, hi = int(used.min()), int(used.max()) + 1
    return {k: (v[:, lo:hi] if k in SEQUENCE_KEYS else v) for k, v in batch.items()}


def batches(
    encoded: Mapping[str, Tensor],
    batch_size: int,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """Minibatches of an :func:`encode` result, each padded only to its own longest example.

    Args:
        encoded: the output of :func:`encode` (every tensor has N rows).
        batch_size: examples per batch (the last may be smaller unless ``drop_last``).
        generator: shuffle with it (a new permutation per call); None keeps the order.

    Yields:
        Dicts with the same keys: token tensors ``[B, T_b]`` (T_b the batch's longest), ``labels [B]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(encoded["labels"].shape[0])
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if drop_last and len(index) < batch_size:
            return
        yield _trim({k: v[index] for k, v in encoded.items()})


class EncodedDataset(Dataset[dict[str, Tensor]]):
    """Item i: the unpadded tokens of example i (1-D tensors of its own length) and ``labels`` (0-d).

    Use :meth:`collate` as a ``DataLoader``'s ``collate_fn`` (pads per batch), or pass the dataset to
    ``transformers.Trainer`` with ``DataCollatorWithPadding(tokenizer)``.
    """

    def __init__(self, encoded: Mapping[str, Tensor], pad_token_id: int = 0) -> None:
        self.encoded = dict(encoded)
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return int(self.encoded["labels"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        keep = self.encoded["attention_mask"][i].bool()
        item = {k: v[i][keep] for k, v in self.encoded.items() if k in SEQUENCE_KEYS}
        item["labels"] = self.encoded["labels"][i]
        return item

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Right-pad a list of items to the longest: ``input_ids`` with ``pad_token_id``, the rest with 0."""
        longest = max(int(item["input_ids"].shape[0]) for item in items)
        out: dict[str, Tensor] = {}
        for key in items[0]:
            if key == "labels":
                out[key] = torch.stack([item[key] for item in items])
                continue
            fill = self.pad_token_id if key == "input_ids" else 0
            out[key] = torch.full((len(items), longest), fill, dtype=torch.long)
            for row, item in enumerate(items):
                out[key][row, : item[key].shape[0]] = item[key]
        return out
