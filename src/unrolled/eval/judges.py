"""Pairwise judges: which of two outputs to the same instruction is better, as a probability.

Every judge maps a batch of ``(instruction, first, second[, reference])`` to one :class:`Verdict` per item:
``p_first``, the probability that the output shown *first* is the better one, or ``None`` when the judge
failed on that item (a failure is never a win, a loss or a tie; :func:`unrolled.eval.win_rate` counts it).

* :class:`LocalLMJudge`: any Hugging Face causal LM, prompted with AlpacaEval's pairwise classification
  protocol and read from its next-token logits (no generated text is parsed).
* :class:`~unrolled.eval.openai_judge.OpenAIJudge`: the same prompt sent to an OpenAI-compatible ``/chat/completions`` server (vLLM, hosted
  APIs), read from the returned log-probabilities; retries with exponential backoff; stdlib only.
* :class:`~unrolled.eval.reference_judge.ReferenceJudge`: the offline judge: cosine similarity of each output to a reference answer in
  all-MiniLM-L6-v2's sentence-embedding space.

This module holds the protocol (:class:`Verdict`, :class:`Judge`, the prompt) and :class:`LocalLMJudge`.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "SYSTEM_PROMPT",
    "USER_PROMPT",
    "VERDICT_TOKENS",
    "Judge",
    "LocalLMJudge",
    "Verdict",
    "pairwise_messages",
    "verdict_token_ids",
]

VERDICT_TOKENS = ("m", "M")
"""The identifiers of the first and the second output; the judge answers with one of them."""

SYSTEM_PROMPT = (
    "You are a careful, impartial evaluator of AI assistants. You compare the outputs that two language "
    "models gave to the same instruction and select the one a thoughtful human reader would prefer."
)

USER_PROMPT = """I am ranking language models by how well they follow instructions. Below is an instruction \
that was given to two models, followed by the output of each. Decide which output is better from a human \
point of view: helpful, correct, relevant to the instruction and clearly written.

## Instruction

{instruction}

## Outputs

The outputs are listed in no particular order. Each is labelled with the identifier of the model that wrote it.

### Output (m)

{first}

### Output (M)

{second}

## Task

Select the model whose output is best. Answer with its identifier only, m or M, and nothing else: no quotes, \
no spaces, no punctuation, no new lines.

## Best model identifier"""


def pairwise_messages(instruction: str, first: str, second: str) -> list[dict[str, str]]:
    """The chat messages (system, user) asking which of ``first`` ("m") and ``second`` ("M") is better."""
    user = USER_PROMPT.format(instruction=instruction, first=first, second=second)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Verdict:
    """One judged item: ``p_first`` = P(the first output shown is better), ``None`` if the judge failed
    (then ``error`` says why); ``attempts`` = the requests or forward passes spent on it."""

    p_first: float | None
    error: str | None = None
    attempts: int = 1


class Judge(ABC):
    """Judges pairs of outputs; :attr:`name` names it in every win rate (``"local:<model>"``, ...)."""

    name: str

    @abstractmethod
    def judge(
        self,
        instructions: Sequence[str],
        first: Sequence[str],
        second: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[Verdict]:
        """One :class:`Verdict` per item; all sequences have the same length ``N``."""


def _check_lengths(
    instructions: Sequence[str],
    first: Sequence[str],
    second: Sequence[str],
    references: Sequence[str] | None,
) -> int:
    n = len(instructions)
    sizes = {"instructions": n, "first": len(first), "second": len(second)}
    if references is not None:
        sizes["references"] = len(references)
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the inputs of a judge must have equal lengths, got {sizes}")
    return n


# -- a local causal LM -------------------------------------------------------------------------------------------


def verdict_token_ids(tokenizer: Any, tokens: Sequence[str] = VERDICT_TOKENS) -> tuple[int, ...]:
    """The ids of the verdict tokens: each must encode as one token, and they must differ.

    ``tokenizer.encode(t, add_special_tokens=False)`` is tried first (SentencePiece tokenizers give ``"▁m"``),
    then the vocabulary entry ``t`` itself; the unknown token does not count.
    """
    ids = []
    for token in tokens:
        encoded = list(tokenizer.encode(token, add_special_tokens=False))
        unk = getattr(tokenizer, "unk_token_id", None)
        if len(encoded) != 1 or (encoded[0] == unk and token != getattr(tokenizer, "unk_token", None)):
            vocab_id = tokenizer.get_vocab().get(token)
            if vocab_id is None:
                raise ValueError(
                    f"the verdict token {token!r} is not a single token of this tokenizer (it encodes as "
                    f"{encoded}); a pairwise judge needs {' and '.join(map(repr, tokens))} as single tokens"
                )
            encoded = [vocab_id]
        ids.append(int(encoded[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"the verdict tokens {tokens} map to the same ids {ids} (is the tokenizer lower-casing?)"
        )
    return tuple(ids)


class LocalLMJudge(Judge):
    """A Hugging Face causal LM as a pairwise judge, with AlpacaEval's classification protocol.

    The prompt (:func:`pairwise_messages`, written after the intent of AlpacaEval's ``alpaca_eval_clf_gpt4_turbo``
    annotator: Li et al. 2023, "AlpacaEval: An Automatic Evaluator of Instruction-following Models"; Dubois et
    al. 2024, "Length-Controlled AlpacaEval") shows the instruction and the two outputs as "Output (m)" and
    "Output (M)" and asks for the identifier of the better one. It goes through the tokenizer's chat template
    (``add_generation_prompt=True``) when there is one, else as plain text. One forward pass per batch: the
    next-token logits at the last position of each left-padded prompt ``[B, V]``, restricted to the two verdict
    tokens, give ``p_first = softmax(logit_m, logit_M)[0]``.

    Args:
        model: a causal LM returning ``logits [B, T, V]`` (anything with that ``forward``); put in eval mode.
        tokenizer: its tokenizer; "m" and "M" must be single tokens (:func:`verdict_token_ids`).
        name: the judge's name; default ``"local:<model name>"``.
        batch_size: prompts per forward pass.
        max_length: the longest prompt in tokens; longer ones have both outputs cut to fit.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        name: str | None = None,
        batch_size: int = 8,
        max_length: int = 4096,
    ) -> None:
        if batch_size < 1 or max_length < 16:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 16, got {batch_size}, {max_length}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.verdict_ids = verdict_token_ids(tokenizer)
        config = getattr(model, "config", None)
        model_name = getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "")
        self.name = name or f"local:{model_name or type(model).__name__}"
        params = inspect.signature(model.forward).parameters  # optional arguments only where named
        self._accepts = {k for k in ("position_ids", "logits_to_keep", "use_cache") if k in params}
        model.eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0

    def _encode(self, instruction: str, first: str, second: str) -> list[int]:
        tok = self.tokenizer
        messages = pairwise_messages(instruction, first, second)
        if getattr(tok, "chat_template", None):
            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # templates without a system role: fold it into the user turn
                merged = [{"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{messages[1]['content']}"}]
                text = tok.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
            return list(tok.encode(text, add_special_tokens=False))
        text = f"{SYSTEM_PROMPT}\n\n{messages[1]['content']}\n"
        return list(tok.encode(text, add_special_tokens=True))

    def prompt_ids(self, instruction: str, first: str, second: str) -> list[int]:
        """The prompt's token ids, both outputs cut (by their share of the excess) if it exceeds ``max_length``."""
        ids = self._encode(instruction, first, second)
        if len(ids) <= self.max_length:
            return ids
        tok = self.tokenizer
        parts = [list(tok.encode(t, add_special_tokens=False)) for t in (first, second)]
        excess = len(ids) - self.max_length + 8  # a margin for merges at the cut
        keep = [max(0, len(p) - math.ceil(excess * len(p) / max(1, sum(map(len, parts))))) for p in parts]
        cut = [
            tok.decode(p[:k]) + " [...]" if k < len(p) else t
            for p, k, t in zip(parts, keep, (first, second), strict=True)
        ]
        return self._encode(instruction, *cut)[-self.max_length :]

    @torch.inference_mode()
    def p_first(self, prompts: Sequence[Sequence[int]]) -> Tensor:
        """P(first better) ``[B]`` of a batch of prompts (token ids), left-padded into one forward pass."""
        width = max(len(p) for p in prompts)
        device = next(iter(self.model.parameters()), torch.empty(0)).device
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if "position_ids" in self._accepts:  # positions count real tokens, so padding changes nothing
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0).to(device)
        if "logits_to_keep" in self._accepts:
            kwargs["logits_to_keep"] = 1
        if "use_cache" in self._accepts:
            kwargs["use_cache"] = False
        out = self.model(**kwargs)
        logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
        if logits is None:
            logits = out[0]
        pair = logits[:, -1, list(self.verdict_ids)].float()  # [B, 2]
        return pair.softmax(dim=-1)[:, 0].cpu()

    def judge(
        self,
        instructions: Sequence[str],
        first: Sequence[str],
        second: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[Verdict]:
        n = _check_lengths(instructions, first, second, references)
        prompts = [self.prompt_ids(instructions[i], first[i], second[i]) for i in range(n)]
        verdicts: list[Verdict] = []
        for start in range(0, n, self.batch_size):
            probs = self.p_first(prompts[start : start + self.batch_size])
            verdicts += [Verdict(float(p)) for p in probs]
        return verdicts
