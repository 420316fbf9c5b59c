"""Instruction data: the three formats, errors that name file, line and field, the split, truncation counts."""

from __future__ import annotations

import json

import pytest

from unrolled.carriers import DataNotFoundError
from unrolled.config import from_dict
from unrolled.tasks.instruct import (
    Example,
    InstructDataConfig,
    count_truncated,
    load_examples,
    read_instruction_file,
    split_examples,
)
from unrolled.tasks.text.files import TextDataError
from unrolled.validation import ConfigError

ALPACA = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_alpaca_records_become_conversations(tmp_path):
    examples = read_instruction_file(write_jsonl(tmp_path / "a.jsonl", ALPACA))
    assert [e.instruction for e in examples] == [
        "Give three tips for staying healthy.",
        "Translate to French.\n\nGood morning",
    ]
    assert examples[1].conversational() == {
        "prompt": [{"role": "user", "content": "Translate to French.\n\nGood morning"}],
        "completion": [{"role": "assistant", "content": "Bonjour"}],
    }
    assert examples[1].where == "a.jsonl, line 2"
    as_list = tmp_path / "a.json"
    as_list.write_text(json.dumps(ALPACA))
    assert read_instruction_file(as_list) == [
        Example(e.prompt, e.completion, f"a.json, item [{i}]") for i, e in enumerate(examples)
    ]


def test_trl_formats_standard_and_conversational(tmp_path):
    rows = [
        {"prompt": "hi", "completion": "hello"},
        {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "completion": [{"role": "assistant", "content": "hello"}]},
    ]  # fmt: skip
    a, b = read_instruction_file(write_jsonl(tmp_path / "pc.jsonl", rows))
    assert a.prompt == ({"role": "user", "content": "hi"},) and a.completion == "hello"
    assert b.prompt[0]["role"] == "system" and b.instruction == "hi"
    messages = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    (m,) = read_instruction_file(write_jsonl(tmp_path / "m.jsonl", messages))
    assert m.instruction == "q" and m.completion == "a"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"instruction": "x", "output": "y"}\n{"instruction": "x"}\n', r"m\.jsonl, line 2, column 'output': missing field 'output'"),
        ('{"instruction": "x", "output": "   "}\n', r"line 1, column 'output': is empty"),
        ('{"instruction": "x", "output": "y"}\n{"instruction": "x", "output": \n', r"line 2: not valid JSON"),
        ('{"messages": [{"role": "user", "content": "q"}]}\n', r"line 1, column 'messages': the last message must be the assistant"),
        ('{"text": "q"}\n', r"line 1: cannot tell the format"),
        ('{"prompt": "q", "completion": [{"role": "bot", "content": "a"}]}\n', r"message \[0\] has role 'bot'"),
    ],
)  # fmt: skip
def test_malformed_records_name_file_line_and_field(tmp_path, content, expected):
    path = tmp_path / "m.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TextDataError, match=expected):
        read_instruction_file(path)


def test_bad_encoding_and_missing_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"instruction": "x", "output": "y"}\n{"instruction": "caf\xe9", "output": "y"}\n')
    with pytest.raises(TextDataError, match=r"bad\.jsonl, line 2: not UTF-8"):
        read_instruction_file(path)
    with pytest.raises(DataNotFoundError, match="no such file"):
        read_instruction_file(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match=r"source: unsupported file type '\.csv'"):
        from_dict(InstructDataConfig, {"source": "data.csv"})


def test_chatterbot_split_is_seeded_and_disjoint_by_instruction():
    cfg = InstructDataConfig(eval_instructions=50, winrate_prompts=30)
    examples = load_examples(cfg)
    assert len(examples) == 2026  # DATA.md: the single-turn pairs, with the first exchange of longer dialogs
    a, b, c = (
        split_examples(examples, cfg, 0),
        split_examples(examples, cfg, 0),
        split_examples(examples, cfg, 1),
    )
    assert a == b and a != c
    sides = [{e.instruction.lower() for e in side} for side in (a.train, a.eval, a.winrate)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert len(sides[1]) == 50 and len(a.winrate) == 30
    # the win-rate prompts keep one reference answer of each instruction; every other example is used once
    groups = {}
    for e in examples:
        groups.setdefault(e.instruction.strip().lower(), []).append(e)
    extra = sum(len(groups[e.instruction.strip().lower()]) - 1 for e in a.winrate)
    assert len(a.train) + len(a.eval) + len(a.winrate) + extra == len(examples)


def test_truncation_is_counted_against_the_chat_template():
    transformers = pytest.importorskip("transformers")
    from unrolled.carriers import minilm_path

    try:
        tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    short = Example(({"role": "user", "content": "hi"},), "hello")
    long = Example(({"role": "user", "content": "word " * 40},), "answer " * 40)
    counts = count_truncated(tok, [short, long, short], max_length=32)
    assert counts["truncated"] == 1 and counts["examples"] == 3 and counts["max_tokens"] > 32


def test_hub_source_parses_rows_and_names_the_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    import unrolled.tasks.text.hub as hub

    calls = []

    def fake_load_hub(name, config, split, **kw):
        calls.append((name, config, split))
        return datasets.Dataset.from_list([*ALPACA, {"instruction": "x", "input": "", "output": ""}])

    monkeypatch.setattr(hub, "load_hub", fake_load_hub)
    cfg = InstructDataConfig(source="tatsu-lab/alpaca", format="alpaca")
    assert cfg.source_kind == "hub"
    with pytest.raises(TextDataError, match=r"tatsu-lab/alpaca \(train\), row 2, column 'output': is empty"):
        load_examples(cfg)
    assert calls == [("tatsu-lab/alpaca", None, "train")]


def test_offline_hub_dataset_is_data_not_found(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="tatsu-lab/alpaca"):
        load_examples(InstructDataConfig(source="tatsu-lab/alpaca"))
