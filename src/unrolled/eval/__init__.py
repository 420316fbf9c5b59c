"""Evaluating fine-tuned language models: batched generation, pairwise judges and AlpacaEval-style win rates
(docs/JUDGES.md)."""

from unrolled.eval.generation import Generations, generate_responses
from unrolled.eval.judges import (
    SYSTEM_PROMPT,
    USER_PROMPT,
    VERDICT_TOKENS,
    Judge,
    LocalLMJudge,
    Verdict,
    pairwise_messages,
    verdict_token_ids,
)
from unrolled.eval.openai_judge import OpenAIJudge
from unrolled.eval.reference_judge import ReferenceJudge
from unrolled.eval.winrate import ItemRecord, WinRate, win_rate, write_alpaca_eval

__all__ = [
    "SYSTEM_PROMPT",
    "USER_PROMPT",
    "VERDICT_TOKENS",
    "Generations",
    "ItemRecord",
    "Judge",
    "LocalLMJudge",
    "OpenAIJudge",
    "ReferenceJudge",
    "Verdict",
    "WinRate",
    "generate_responses",
    "pairwise_messages",
    "verdict_token_ids",
    "win_rate",
    "write_alpaca_eval",
]
