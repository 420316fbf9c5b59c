"""Instruction-tuning records in the three formats SFT users have, read into one :class:`Example` type.

Formats (chosen per source with ``format``, or detected from the first record's keys with ``auto``):

* ``alpaca``: ``{"instruction", "input", "output"}`` (Taori et al. 2023, ``tatsu-lab/alpaca``); ``input`` may
  be missing or empty, else it follows the instruction after a blank line, as Alpaca's own prompt does.
* ``prompt_completion`` (TRL): ``{"prompt", "completion"}``, each a string (TRL's *standard* form) or a list
  of ``{"role", "content"}`` messages (its *conversational* form).
* ``messages`` (TRL's conversational language-modelling form): ``{"messages": [...]}``; the last message is
  the assistant's answer and is the completion, the ones before it are the prompt.

Every example becomes a conversation (the prompt's messages, the assistant's reply), so the model's chat
template renders it and SFT trains on the reply only (TRL's completion-only loss). Problems raise
:class:`~unrolled.tasks.text.files.TextDataError` naming the file, the line (JSONL) or item (JSON list) and
the field: a missing field, an empty output, a bad JSON line, a file that is not UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from unrolled.carriers import DataNotFoundError
from unrolled.tasks.text.files import TextDataError, decode_text, json_rows, jsonl_rows

__all__ = ["FORMATS", "Example", "Format", "detect_format", "parse_record", "read_instruction_file"]

Format = Literal["auto", "alpaca", "prompt_completion", "messages"]
FORMATS = ("alpaca", "prompt_completion", "messages")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One instruction and its reference answer.

    Attributes:
        prompt: the conversation before the answer, ``({"role", "content"}, ...)``; ends with a user turn.
        completion: the reference answer (the assistant's reply).
        where: where it came from, e.g. ``alpaca.jsonl, line 7`` (for error messages and reports).
    """

    prompt: tuple[dict[str, str], ...]
    completion: str
    where: str = ""

    @property
    def instruction(self) -> str:
        """The last user turn: what a judge and AlpacaEval's ``instruction`` field show."""
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")

    def conversational(self) -> dict[str, list[dict[str, str]]]:
        """TRL's conversational prompt-completion record."""
        return {
            "prompt": [dict(m) for m in self.prompt],
            "completion": [{"role": "assistant", "content": self.completion}],
        }


def detect_format(row: Mapping[str, Any]) -> str:
    """The format a record's keys say (``messages``, ``prompt_completion`` or ``alpaca``), or ValueError."""
    if "messages" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise ValueError(
        f"cannot tell the format from the keys {sorted(row)}: expected 'instruction' and 'output' (Alpaca), "
        "'prompt' and 'completion', or 'messages'"
    )


def _text(row: Mapping[str, Any], key: str, fail: Any, *, required: bool = True) -> str:
    if key not in row or row[key] is None:
        if not required:
            return ""
        raise fail(f"missing field {key!r}; the record has {sorted(row)}", key)
    value = row[key]
    if not isinstance(value, str):
        raise fail(f"expected text, got {type(value).__name__}", key)
    if required and not value.strip():
        raise fail("is empty", key)
    return value


def _messages(value: Any, key: str, fail: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise fail("expected a non-empty list of {'role', 'content'} messages", key)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise fail(f"message [{i}] is not a {{'role', 'content'}} object", key)
        if m["role"] not in ROLES:
            raise fail(f"message [{i}] has role {m['role']!r}; one of {', '.join(ROLES)}", key)
        if not isinstance(m["content"], str):
            raise fail(f"message [{i}] content is {type(m['content']).__name__}, not text", key)
        out.append({"role": str(m["role"]), "content": m["content"]})
    return out


def parse_record(row: Mapping[str, Any], fmt: str, source: str | Path, where: str | None) -> Example:
    """One record of format ``fmt`` as an :class:`Example` (errors name ``source``, ``where`` and the field)."""

    def fail(reason: str, column: str | None = None) -> TextDataError:
        return TextDataError(source, reason, where, column)

    place = f"{Path(str(source)).name}, {where}" if where else str(source)
    if fmt == "alpaca":
        instruction = _text(row, "instruction", fail)
        extra = _text(row, "input", fail, required=False).strip()
        content = instruction.strip() + (f"\n\n{extra}" if extra else "")
        return Example(({"role": "user", "content": content},), _text(row, "output", fail).strip(), place)
    if fmt == "prompt_completion":
        for key in ("prompt", "completion"):
            if key not in row:
                raise fail(f"missing field {key!r}; the record has {sorted(row)}", key)
        prompt_value, completion_value = row["prompt"], row["completion"]
        if isinstance(prompt_value, str):
            prompt = [{"role": "user", "content": _text(row, "prompt", fail)}]
        else:
            prompt = _messages(prompt_value, "prompt", fail)
        if isinstance(completion_value, str):
            completion = _text(row, "completion", fail)
        else:
            turns = _messages(completion_value, "completion", fail)
            if len(turns) != 1 or turns[0]["role"] != "assistant":
                raise fail("a conversational completion must be exactly one assistant message", "completion")
            completion = turns[0]["content"]
    elif fmt == "messages":
        if "messages" not in row:
            raise fail(f"missing field 'messages'; the record has {sorted(row)}", "messages")
        turns = _messages(row["messages"], "messages", fail)
        if turns[-1]["role"] != "assistant" or len(turns) < 2:
            raise fail("the last message must be the assistant's answer, after a user turn", "messages")
        prompt, completion = turns[:-1], turns[-1]["content"]
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if not completion.strip():
        raise fail("the answer is empty", "completion" if fmt == "prompt_completion" else "messages")
    if not any(m["role"] == "user" for m in prompt) or prompt[-1]["role"] != "user":
        raise fail(
            "the prompt must end with a user turn", "prompt" if fmt == "prompt_completion" else "messages"
        )
    return Example(tuple(prompt), completion.strip(), place)


def parse_records(
    rows: Iterable[tuple[str | None, Mapping[str, Any]]], fmt: str, source: str | Path
) -> list[Example]:
    """Every ``(where, row)`` as an Example; ``auto`` takes the first row's format for all of them."""
    examples: list[Example] = []
    chosen = None if fmt == "auto" else fmt
    for where, row in rows:
        if chosen is None:
            try:
                chosen = detect_format(row)
            except ValueError as exc:
                raise TextDataError(source, str(exc), where) from None
        examples.append(parse_record(row, chosen, source, where))
    if not examples:
        raise TextDataError(source, "holds no records")
    return examples


def read_instruction_file(path: str | Path, fmt: str = "auto") -> list[Example]:
    """The examples of a local ``.json`` (a list of objects) or ``.jsonl`` (one object per line) file."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl", ".ndjson"):
        raise TextDataError(path, f"unsupported file type {suffix!r}; one of .json, .jsonl, .ndjson")
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file")
    text = decode_text(path)
    rows: Iterator[tuple[str, dict[str, Any]]] = (
        json_rows(path, text) if suffix == ".json" else jsonl_rows(path, text)
    )
    return parse_records(rows, fmt, path)
