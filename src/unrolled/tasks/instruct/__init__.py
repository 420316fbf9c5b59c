"""Instruction-tuning data: Alpaca, TRL prompt-completion and conversational records; the offline chatterbot
pairs; the seeded split into train, eval and win-rate prompts (docs/SFT.md)."""

from unrolled.tasks.instruct.data import (
    InstructDataConfig,
    InstructSplit,
    count_truncated,
    load_examples,
    split_examples,
    to_dataset,
)
from unrolled.tasks.instruct.records import Example, detect_format, parse_record, read_instruction_file

__all__ = [
    "Example",
    "InstructDataConfig",
    "InstructSplit",
    "count_truncated",
    "detect_format",
    "load_examples",
    "parse_record",
    "read_instruction_file",
    "split_examples",
    "to_dataset",
]
