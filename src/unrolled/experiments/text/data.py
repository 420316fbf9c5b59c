"""One seed's text data: the split, and its tokenisation for each model's tokenizer (cached per process)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from unrolled.models.hf import load_tokenizer
from unrolled.tasks.text import TextDataConfig, TextSplit, encode, load_text_data


@lru_cache(maxsize=4)
def tokenizer_of(model: str) -> Any:
    """The tokenizer of a model alias, folder or hub name (loaded once per process)."""
    return load_tokenizer(model)


_SPLITS: dict[tuple[str, int], TextSplit] = {}


def split_of(task: TextDataConfig, seed: int) -> TextSplit:
    """:func:`~unrolled.tasks.text.load_text_data`, once per process and (config, seed)."""
    key = (task.model_dump_json(), seed)
    if key not in _SPLITS:
        _SPLITS.clear()  # one split at a time is enough: units run seed by seed
        _SPLITS[key] = load_text_data(task, seed)
    return _SPLITS[key]


class TextSeedData:
    """The train / validation / test texts of one seed, encoded on demand for each tokenizer."""

    def __init__(self, task: TextDataConfig, seed: int) -> None:
        self.task, self.seed = task, seed
        self.split = split_of(task, seed)
        self._encoded: dict[tuple[str, str], dict[str, Tensor]] = {}

    @property
    def num_labels(self) -> int:
        return self.split.train.num_classes

    def encoded(self, model: str, side: str) -> dict[str, Tensor]:
        """``input_ids``, ``attention_mask`` (, ``token_type_ids``) ``[N, T]`` and ``labels [N]`` of one side."""
        key = (model, side)
        if key not in self._encoded:
            examples = self.split.sides()[side]
            self._encoded[key] = encode(examples, tokenizer_of(model), self.task.max_length)
        return self._encoded[key]

    def sizes(self) -> dict[str, int]:
        return {side: len(ex) for side, ex in self.split.sides().items()}


@torch.no_grad()
def embedding_sigma(model: torch.nn.Module, encoded: dict[str, Tensor], batch_size: int = 256) -> float:
    """σ of the Gaussian perturbation: the std of the clean token embeddings over every real (non-padding)
    token of ``encoded`` (the output of ``model.get_input_embeddings()``, before positions are added)."""
    table = model.get_input_embeddings()
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, encoded["input_ids"].shape[0], batch_size):
        ids = encoded["input_ids"][start : start + batch_size]
        mask = encoded["attention_mask"][start : start + batch_size].bool()
        e = table(ids.to(table.weight.device))[mask.to(table.weight.device)].double()
        total, total_sq, count = total + float(e.sum()), total_sq + float((e * e).sum()), count + e.numel()
    mean = total / count
    return (total_sq / count - mean * mean) ** 0.5
