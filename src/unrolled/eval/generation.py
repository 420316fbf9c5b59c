"""Responses of a chat model to instructions: batched greedy decoding with the KV cache, optionally with noise on
the token embeddings (the test perturbation of the win rate).

This is ``transformers``' own ``generate`` (greedy, ``use_cache=True``, left padding, ``max_new_tokens``); we
add only the batching, the chat template, the noise hook and the accounting. Under noise every embedding the
model reads is perturbed: the prompt's and, one at a time, each generated token's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unrolled.perturb import EmbeddingNoise, Perturbation

__all__ = ["Generations", "generate_responses"]


@dataclass
class Generations:
    """Responses and what they cost: ``texts[i]`` answers prompt i with ``new_tokens[i]`` tokens (EOS excluded);
    ``finished[i]`` says whether it ended with EOS before ``max_new_tokens``."""

    texts: list[str] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        n = max(1, len(self.texts))
        return {
            "responses": len(self.texts),
            "new_tokens": int(sum(self.new_tokens)),
            "mean_new_tokens": sum(self.new_tokens) / n,
            "hit_max_new_tokens": int(sum(1 for f in self.finished if not f)),
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_per_second,
        }


def _prompt_texts(tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]]) -> list[str]:
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False)
            for p in prompts
        ]
    return ["\n\n".join(m["content"] for m in p) + "\n\n" for p in prompts]  # a base model without a template


@torch.no_grad()
def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    noise: Perturbation | None = None,
    generator: torch.Generator | None = None,
) -> Generations:
    """Greedy responses to conversations (each a list of ``{"role", "content"}`` ending with a user turn).

    Args:
        model: a causal LM (``generate``), or a PEFT model around one.
        tokenizer: its tokenizer (its chat template renders the prompts; padding goes on the left).
        prompts: N conversations.
        max_new_tokens: the most tokens per response.
        batch_size: prompts decoded together (1: one at a time).
        noise: a perturbation of the token embeddings while decoding (None or γ = 0: clean).
        generator: the noise's random stream.

    Returns:
        :class:`Generations` with N responses, decoded without special tokens and stripped.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos_token)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    texts = _prompt_texts(tokenizer, prompts)
    out = Generations()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    hook = None
    if noise is not None and (noise.gamma > 0 or noise.mean != 0):
        hook = EmbeddingNoise(model.get_input_embeddings(), noise, "test", generator)
    eos = tokenizer.eos_token_id
    t0 = time.perf_counter()
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            ids = model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            new = ids[:, batch["input_ids"].shape[1] :]
            for row in new:
                ended = (row == eos).nonzero()
                length = int(ended[0]) if len(ended) else int((row != tokenizer.pad_token_id).sum())
                out.new_tokens.append(length)
                out.finished.append(bool(len(ended)))
                out.texts.append(tokenizer.decode(row[:length], skip_special_tokens=True).strip())
    finally:
        tokenizer.padding_side = side
        if hook is not None:
            hook.remove()
        model.train(was_training)
    out.seconds = time.perf_counter() - t0
    return out
