"""One seed's SFT data: the split, TRL datasets, the tokenizer, σ of the embedding noise, truncation counts."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch

from unrolled.experiments.sft.config import SFTTaskConfig
from unrolled.models.hf import load_model, load_tokenizer
from unrolled.tasks.instruct.data import (
    InstructSplit,
    count_truncated,
    load_examples,
    split_examples,
    to_dataset,
)

__all__ = ["SFTSeedData", "embedding_sigma"]


def embedding_sigma(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> float:
    """σ of the Gaussian noise: the std of the model's token embeddings over every token of the training
    conversations as the chat template renders them."""
    table = model.get_input_embeddings()
    total = total_sq = 0.0
    count = 0
    with torch.no_grad():
        for conv in conversations:
            ids = tokenizer.apply_chat_template(conv, tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            e = table(torch.as_tensor(ids, device=table.weight.device)).double()
            total, total_sq, count = (
                total + float(e.sum()),
                total_sq + float((e * e).sum()),
                count + e.numel(),
            )
    mean = total / count
    return (total_sq / count - mean * mean) ** 0.5


class SFTSeedData:
    """The split of one seed, with what every unit of that seed shares (built lazily, once per process)."""

    def __init__(self, task: SFTTaskConfig, seed: int) -> None:
        self.task, self.seed = task, seed
        self.split: InstructSplit = split_examples(load_examples(task), task, seed)

    @cached_property
    def tokenizer(self) -> Any:
        tok = load_tokenizer(self.task.model)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    @cached_property
    def train_dataset(self) -> Any:
        return to_dataset(self.split.train)

    @cached_property
    def eval_dataset(self) -> Any:
        return to_dataset(self.split.eval)

    @cached_property
    def sigma(self) -> float:
        """σ of the base model's token embeddings over the training tokens (the same for every method)."""
        model = load_model(self.task.model, "causal_lm")
        convs = [ex.conversational() for ex in self.split.train]
        return embedding_sigma(model, self.tokenizer, [c["prompt"] + c["completion"] for c in convs])

    @cached_property
    def truncation(self) -> dict[str, Any]:
        """Examples longer than ``max_length`` after the chat template (TRL truncates them), per side."""
        return {
            side: count_truncated(self.tokenizer, getattr(self.split, side), self.task.max_length)
            for side in ("train", "eval")
        }

    def sizes(self) -> dict[str, int]:
        return self.split.sizes()
