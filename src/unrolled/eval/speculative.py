"""Self-speculative decoding of a causal LM through transformers' own ``assistant_early_exit`` (issue 31).

LayerSkip (Elhoushi et al. 2024) drafts tokens with the first k layers of a model and verifies them with all
of them: greedy outputs are unchanged, and the speed depends on how many drafted tokens the full model
accepts. transformers runs it as ``model.generate(..., assistant_early_exit=k)`` (its
``EarlyExitCandidateGenerator``); we do not write a second decoder. :func:`self_speculative` times it against
plain greedy decoding of the same model on the same prompts, one prompt at a time (assisted generation takes a
batch of one), checks that the outputs are identical, and reads the acceptance rate from transformers' own
verification step (the matches it reports to the candidate generator after each draft).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DraftCount:
    """Tokens drafted and accepted over a generation (from transformers' verification step)."""

    drafted: int = 0
    accepted: int = 0
    rounds: int = 0

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


@contextlib.contextmanager
def counting_drafts() -> Iterator[DraftCount]:
    """Count what every early-exit candidate generator drafts and the model accepts, while the block runs."""
    from transformers.generation.candidate_generator import EarlyExitCandidateGenerator

    count = DraftCount()
    original = EarlyExitCandidateGenerator.update_candidate_strategy

    def update(self: Any, input_ids: torch.Tensor, scores: torch.Tensor, num_matches: int) -> None:
        count.drafted += int(scores.shape[1]) - 1  # the logits cover the drafted tokens and one bonus token
        count.accepted += int(num_matches)
        count.rounds += 1
        original(self, input_ids, scores, num_matches)

    EarlyExitCandidateGenerator.update_candidate_strategy = update  # type: ignore[method-assign]
    try:
        yield count
    finally:
        EarlyExitCandidateGenerator.update_candidate_strategy = original  # type: ignore[method-assign]


@dataclass
class SpeculativeResult:
    """Self-speculative decoding with the first ``exit_layer`` layers as the draft, over a set of prompts."""

    exit_layer: int
    new_tokens: int
    seconds: float
    greedy_seconds: float
    identical: bool
    drafts: DraftCount = field(default_factory=DraftCount)

    @property
    def speedup(self) -> float:
        """Tokens per second over plain greedy decoding's (the same tokens when identical)."""
        return self.greedy_seconds / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "exit_layer": self.exit_layer,
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "greedy_seconds": self.greedy_seconds,
            "tokens_per_second": self.new_tokens / self.seconds,
            "greedy_tokens_per_second": self.new_tokens / self.greedy_seconds,
            "speedup": self.speedup,
            "identical": self.identical,
            "drafted": self.drafts.drafted,
            "accepted": self.drafts.accepted,
            "acceptance": self.drafts.acceptance,
        }


@torch.no_grad()
def self_speculative(
    model: Any,
    inputs: Sequence[torch.Tensor],
    exit_layers: Sequence[int],
    max_new_tokens: int = 48,
    repeats: int = 1,
) -> list[SpeculativeResult]:
    """Greedy decoding of every prompt (``inputs``: token ids ``[1, T]`` each), plain and self-speculative at
    every exit layer; times are the medians of ``repeats`` over the whole prompt set, alternated.

    Raises:
        ValueError: an exit layer outside 1..L − 1, or a prompt that is not one row of token ids.
    """
    depth = int(model.config.num_hidden_layers)
    bad = [k for k in exit_layers if not 1 <= k < depth]
    if bad:
        raise ValueError(f"exit layers must be in 1..{depth - 1} (the model has {depth}), got {bad}")
    if any(ids.dim() != 2 or ids.shape[0] != 1 for ids in inputs):
        raise ValueError("self-speculative decoding takes one prompt at a time: token ids [1, T] each")
    model.eval()
    settings = {"do_sample": False, "max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens}
    pad = getattr(model.generation_config, "pad_token_id", None) or getattr(
        model.config, "eos_token_id", None
    )
    settings["pad_token_id"] = pad[0] if isinstance(pad, list) else pad

    def run(exit_layer: int | None) -> tuple[list[torch.Tensor], float, DraftCount]:
        extra = {} if exit_layer is None else {"assistant_early_exit": exit_layer}
        outs = []
        with counting_drafts() as count:
            t0 = time.perf_counter()
            for ids in inputs:
                outs.append(model.generate(ids, attention_mask=torch.ones_like(ids), **settings, **extra))
            seconds = time.perf_counter() - t0
        return outs, seconds, count

    greedy_times: list[float] = []
    times: dict[int, list[float]] = {k: [] for k in exit_layers}
    outputs: dict[int, list[torch.Tensor]] = {}
    drafts: dict[int, DraftCount] = {}
    reference: list[torch.Tensor] = []
    for _ in range(repeats):
        reference, seconds, _ = run(None)
        greedy_times.append(seconds)
        for k in exit_layers:
            outputs[k], seconds, drafts[k] = run(k)
            times[k].append(seconds)
    new_tokens = sum(int(o.shape[1] - i.shape[1]) for o, i in zip(reference, inputs, strict=True))
    greedy = float(torch.tensor(greedy_times).median())
    return [
        SpeculativeResult(
            k,
            new_tokens,
            float(torch.tensor(times[k]).median()),
            greedy,
            all(torch.equal(a, b) for a, b in zip(outputs[k], reference, strict=True)),
            drafts[k],
        )
        for k in exit_layers
    ]
