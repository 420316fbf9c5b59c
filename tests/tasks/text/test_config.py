"""TextDataConfig: defaults, source kinds, and errors that name the key."""

from __future__ import annotations

import pytest

from unrolled.config import ConfigError, dump_yaml, from_dict, load_yaml
from unrolled.tasks.text import TextDataConfig, source_kind


def test_defaults_and_source_kinds(tmp_path):
    cfg = from_dict(TextDataConfig, {}, "task")
    assert (cfg.kind, cfg.source, cfg.validation_fraction, cfg.test_fraction, cfg.max_length) == (
        "text",
        "newsgroups",
        0.1,
        0.2,
        128,
    )
    assert (cfg.text_column, cfg.text_pair_column, cfg.label_column, cfg.labels) == (
        "text",
        None,
        "label",
        None,
    )
    kinds = {
        "newsgroups": "carrier",
        "chatterbot": "carrier",
        "data/train.csv": "file",
        "x.TSV": "file",
        "/abs/path/data.parquet": "file",
        "./folder/file": "file",
        "imdb": "hub",
        "nyu-mll/glue": "hub",
    }
    assert {s: source_kind(s) for s in kinds} == kinds
    cfg = from_dict(TextDataConfig, {"source": "train.jsonl", "root": str(tmp_path)})
    assert cfg.source_path() == tmp_path / "train.jsonl"
    assert (
        from_dict(TextDataConfig, {"source": "/a/b.csv", "root": "/r"}).source_path().as_posix() == "/a/b.csv"
    )


def test_yaml_round_trip(tmp_path):
    text = """
source: nyu-mll/glue
hub_config: mnli
hub_splits: {train: train, test: validation_matched}
text_column: premise
text_pair_column: hypothesis
labels: [entailment, neutral, contradiction]
max_examples: 2000
"""
    path = tmp_path / "t.yaml"
    path.write_text(text)
    cfg = from_dict(TextDataConfig, load_yaml(path))
    assert cfg.hub_splits == {"train": "train", "test": "validation_matched"}
    assert cfg.labels == ("entailment", "neutral", "contradiction") and cfg.source_kind == "hub"
    assert from_dict(TextDataConfig, load_yaml_text(dump_yaml(cfg), tmp_path)) == cfg


def load_yaml_text(text: str, folder) -> dict:
    path = folder / "again.yaml"
    path.write_text(text)
    return load_yaml(path)


BAD = [
    ({"validation_fraction": 1.0}, r"task\.validation_fraction: must be in \[0, 1\)"),
    ({"test_fraction": -0.1}, r"task\.test_fraction"),
    (
        {"validation_fraction": 0.5, "test_fraction": 0.5},
        r"task\.test_fraction: validation_fraction \+ test_fraction must be < 1",
    ),
    ({"max_examples": 0}, r"task\.max_examples: must be >= 1"),
    ({"max_length": 2}, r"task\.max_length: must be >= 4"),
    ({"source": ""}, r"task\.source: must be a non-empty"),
    ({"source": "data/train.txt"}, r"task\.source: unsupported file type '\.txt'"),
    ({"source": "newsgroup s"}, r"task\.source: 'newsgroup s' is not a registered source"),
    ({"source": "newsgroup!"}, r"did you mean the carrier 'newsgroups'"),
    (
        {"source": "newsgroups", "hub_config": "mnli"},
        r"task\.hub_config: only for a hub dataset source; 'newsgroups' is a carrier",
    ),
    (
        {"source": "a.csv", "hub_splits": {"train": "train"}},
        r"task\.hub_splits: only for a hub dataset source; 'a\.csv' is a file",
    ),
    ({"source": "imdb", "hub_splits": {"test": "test"}}, r"task\.hub_splits: must map 'train'"),
    (
        {"source": "imdb", "hub_splits": {"train": "train", "dev": "x"}},
        r"task\.hub_splits\.dev: unknown split",
    ),
    ({"source": "imdb", "hub_splits": {"train": " "}}, r"task\.hub_splits\.train: must name a split"),
    ({"labels": ["a"]}, r"task\.labels: needs at least two labels"),
    ({"labels": ["a", "b", "a"]}, r"task\.labels: lists a label twice"),
    ({"labels": ["a", ""]}, r"task\.labels\[1\]: must not be empty"),
    ({"label_column": "text"}, r"task\.label_column: the columns must differ"),
    ({"text_colum": "x"}, r"did you mean 'text_column'"),
    ({"kind": "video"}, r"task\.kind"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TextDataConfig, data, "task")
