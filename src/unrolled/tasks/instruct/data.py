"""Instruction data for SFT: the sources, the seeded split into train / eval / win-rate prompts, truncation.

Sources (:class:`InstructDataConfig` ``source``): ``chatterbot`` (the 2,026 single-turn (user, assistant)
pairs of chatterbot-corpus, offline: the conversations of two utterances and the first exchange of longer
ones), a local ``.json`` / ``.jsonl`` file, or a Hugging Face hub dataset (``tatsu-lab/alpaca``).

The split is by instruction: every example whose instruction (last user turn) is the same goes to the same
side, so no eval or win-rate prompt was seen in training (chatterbot asks "What is AI?" with several
answers). The win-rate prompts take one reference answer each (the first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from unrolled.config import ConfigModel, Int, Str
from unrolled.seeding import derive_seed
from unrolled.tasks.instruct.records import Example, parse_records, read_instruction_file
from unrolled.tasks.text.files import TextDataError
from unrolled.validation import check

__all__ = [
    "InstructDataConfig",
    "InstructSplit",
    "count_truncated",
    "load_examples",
    "split_examples",
    "to_dataset",
]

CARRIERS = ("chatterbot",)


class InstructDataConfig(ConfigModel):
    """Where the instructions come from and how many go to each side.

    ``source``: ``chatterbot`` (offline), a ``.json`` / ``.jsonl`` file (relative paths resolve under
    ``root``), or a hub dataset name (``tatsu-lab/alpaca``, split ``hub_split``). ``format``: ``auto``
    (from the keys), ``alpaca``, ``prompt_completion`` or ``messages`` (see :mod:`.records`).
    ``eval_instructions`` distinct instructions (with every answer they have) are held out for the eval token
    accuracy, and ``winrate_prompts`` more (with one reference answer each) for the win rate;
    ``max_train_examples`` caps the rest (None: all of it).
    """

    source: Str = "chatterbot"
    format: Literal["auto", "alpaca", "prompt_completion", "messages"] = "auto"
    hub_split: Str = "train"
    eval_instructions: Annotated[Int, Field(ge=1)] = 120
    winrate_prompts: Annotated[Int, Field(ge=1)] = 80
    max_train_examples: Annotated[Int, Field(ge=1)] | None = None
    root: Str | None = None

    @model_validator(mode="after")
    def _source(self) -> InstructDataConfig:
        check(
            bool(self.source.strip()), "source", "must name chatterbot, a .json/.jsonl file or a hub dataset"
        )
        if self.source_kind == "file":
            suffix = PurePath(self.source).suffix.lower()
            check(
                suffix in (".json", ".jsonl", ".ndjson"),
                "source",
                f"unsupported file type {suffix or '(none)'!r}; one of .json, .jsonl, .ndjson",
            )
        return self

    @property
    def source_kind(self) -> Literal["carrier", "file", "hub"]:
        if self.source in CARRIERS:
            return "carrier"
        if PurePath(self.source).suffix or self.source.startswith(("/", "./", "../", "~")):
            return "file"
        return "hub"


def _chatterbot() -> list[Example]:
    from unrolled.tasks.text.carriers import chatterbot_pairs

    return [
        Example(({"role": "user", "content": p.user},), p.assistant, f"chatterbot {p.category} #{i}")
        for i, p in enumerate(chatterbot_pairs(include_multi_turn=True))
    ]


def _hub(cfg: InstructDataConfig) -> list[Example]:
    from unrolled.tasks.text.hub import load_hub

    dataset = load_hub(cfg.source, None, cfg.hub_split)
    rows = ((f"row {i}", row) for i, row in enumerate(dataset))
    return parse_records(rows, cfg.format, f"{cfg.source} ({cfg.hub_split})")


def load_examples(cfg: InstructDataConfig) -> list[Example]:
    """Every example of the configured source, in source order."""
    kind = cfg.source_kind
    if kind == "carrier":
        return _chatterbot()
    if kind == "file":
        path = Path(cfg.source).expanduser()
        if not path.is_absolute() and cfg.root:
            path = Path(cfg.root).expanduser() / path
        return read_instruction_file(path, cfg.format)
    return _hub(cfg)


@dataclass(frozen=True)
class InstructSplit:
    """One seed's split: training examples, eval examples (distinct instructions) and win-rate prompts."""

    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    winrate: tuple[Example, ...]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "eval": len(self.eval), "winrate": len(self.winrate)}


def split_examples(examples: Sequence[Example], cfg: InstructDataConfig, seed: int) -> InstructSplit:
    """Split by distinct instruction (a seeded permutation): win-rate prompts (first answer), eval (all answers),
    then train."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.instruction.strip().lower(), []).append(ex)
    keys = list(groups)
    held = cfg.eval_instructions + cfg.winrate_prompts
    if len(keys) <= held:
        raise TextDataError(
            cfg.source,
            f"has {len(keys)} distinct instructions; eval_instructions + winrate_prompts = {held} leaves none to train on",
        )
    order = np.random.default_rng(derive_seed(seed, "instruct-split")).permutation(len(keys))
    shuffled = [keys[i] for i in order]
    winrate = tuple(groups[k][0] for k in shuffled[: cfg.winrate_prompts])
    eval_ = tuple(ex for k in shuffled[cfg.winrate_prompts : held] for ex in groups[k])
    train = [ex for k in shuffled[held:] for ex in groups[k]]
    if cfg.max_train_examples is not None:
        train = train[: cfg.max_train_examples]
    return InstructSplit(tuple(train), eval_, winrate)


def to_dataset(examples: Sequence[Example]) -> Any:
    """A ``datasets.Dataset`` of TRL's conversational prompt-completion records."""
    from datasets import Dataset

    return Dataset.from_list([ex.conversational() for ex in examples])


def count_truncated(tokenizer: Any, examples: Sequence[Example], max_length: int) -> dict[str, Any]:
    """How many examples the chat template makes longer than ``max_length`` tokens (TRL truncates them).

    Returns ``{"truncated": n, "examples": N, "max_tokens": longest, "mean_tokens": mean}``.
    """
    lengths = []
    for ex in examples:
        record = ex.conversational()
        ids = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        lengths.append(len(ids))
    arr = np.asarray(lengths)
    return {
        "truncated": int((arr > max_length).sum()),
        "examples": len(lengths),
        "max_tokens": int(arr.max()) if len(arr) else 0,
        "mean_tokens": float(arr.mean()) if len(arr) else 0.0,
    }
