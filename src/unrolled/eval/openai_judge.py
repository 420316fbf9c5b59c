"""An OpenAI-compatible chat endpoint (vLLM, hosted APIs) as a pairwise judge; stdlib HTTP only."""

from __future__ import annotations

import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from unrolled.eval.judges import VERDICT_TOKENS, Judge, Verdict, _check_lengths, pairwise_messages

__all__ = ["OpenAIJudge"]


class _RetryableError(Exception):
    """A failed request worth retrying."""


class OpenAIJudge(Judge):
    """An OpenAI-compatible ``/chat/completions`` endpoint as a pairwise judge (the prompt of
    :class:`LocalLMJudge`; ``max_tokens=1``, ``temperature=0``, ``logprobs``, ``top_logprobs=20``).

    ``p_first`` comes from ``choices[0].logprobs.content[0].top_logprobs``, renormalised over the two verdict
    tokens (tokens stripped of whitespace); without log-probabilities, a content of exactly "m" or "M" gives
    1.0 or 0.0. Malformed JSON, missing fields, an unparseable verdict, timeouts, connection errors and HTTP
    408/429/5xx are retried after ``backoff * 2**k`` seconds (k = 0, 1, ...), other HTTP 4xx fail at once;
    after ``max_retries`` retries the item is a failed :class:`Verdict`.

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (``/chat/completions`` is appended).
        model: the served model's name.
        api_key: sent as a bearer token; default the ``OPENAI_API_KEY`` environment variable (none if unset).
        timeout: seconds per request.
        max_retries, backoff: the retry schedule.
        sleep: the function that waits (injectable for tests).
        workers: requests in flight at once (threads).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        workers: int = 1,
    ) -> None:
        if max_retries < 0 or workers < 1:
            raise ValueError(f"max_retries must be >= 0 and workers >= 1, got {max_retries}, {workers}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_retries, self.backoff = model, timeout, max_retries, backoff
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.sleep, self.workers = sleep, workers
        self.name = f"openai:{model}@{base_url}"

    def _request(self, messages: list[dict[str, str]]) -> float:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code} {exc.reason}"
            if exc.code in (408, 429) or exc.code >= 500:
                raise _RetryableError(why) from None
            raise ValueError(why) from None  # not retried
        except (OSError, http.client.HTTPException) as exc:  # URLError and TimeoutError are OSErrors
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from None
        try:
            return _parse_completion(json.loads(raw))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise _RetryableError(f"bad response ({type(exc).__name__}: {exc}): {raw[:200]!r}") from None

    def judge_one(self, instruction: str, first: str, second: str) -> Verdict:
        """One item, with retries."""
        messages, error = pairwise_messages(instruction, first, second), ""
        for attempt in range(self.max_retries + 1):
            try:
                return Verdict(self._request(messages), None, attempt + 1)
            except ValueError as exc:
                return Verdict(None, str(exc), attempt + 1)
            except _RetryableError as exc:
                error = str(exc)
            if attempt < self.max_retries:
                self.sleep(self.backoff * 2**attempt)
        return Verdict(None, f"failed after {self.max_retries + 1} attempts: {error}", self.max_retries + 1)

    def judge(
        self,
        instructions: Sequence[str],
        first: Sequence[str],
        second: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[Verdict]:
        n = _check_lengths(instructions, first, second, references)
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.judge_one, instructions, first, second)) if n else []


def _parse_completion(data: Any) -> float:
    """P(first better) from a chat-completion response; raises on anything unparseable."""
    choice = data["choices"][0]
    content = ((choice.get("message") or {}).get("content") or "").strip()
    top = (((choice.get("logprobs") or {}).get("content") or [{}])[0] or {}).get("top_logprobs") or []
    mass = dict.fromkeys(VERDICT_TOKENS, 0.0)
    for entry in top:
        token = str(entry["token"]).strip()
        if token in mass:
            mass[token] += math.exp(float(entry["logprob"]))
    total = sum(mass.values())
    if total > 0:
        return mass[VERDICT_TOKENS[0]] / total
    if content in VERDICT_TOKENS:
        return 1.0 if content == VERDICT_TOKENS[0] else 0.0
    raise ValueError(f"no verdict: content {content!r} and no verdict token among the log-probabilities")
