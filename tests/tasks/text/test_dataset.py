"""load_text_data: deterministic, disjoint, stratified splits; max_examples; files and hub splits."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from unrolled.tasks.text import (
    TextDataConfig,
    TextDataError,
    TextExamples,
    load_text_data,
    stratified_split,
)
from unrolled.tasks.text import dataset as dataset_module


def _keys(examples: TextExamples) -> set:
    return set(examples.inputs())


@pytest.mark.parametrize("source", ["newsgroups", "chatterbot"])
def test_split_deterministic_disjoint_stratified(source):
    cfg = TextDataConfig(source=source)
    split = load_text_data(cfg, seed=0)
    again = load_text_data(cfg, seed=0)
    other = load_text_data(cfg, seed=1)
    assert split == again
    assert split.train.texts != other.train.texts
    sides = split.sides().values()
    total = sum(len(s) for s in sides)
    full = dataset_module._carrier(cfg)
    assert total == len(full)
    assert sorted(t for s in sides for t in s.texts) == sorted(full.texts)  # a partition
    train, val, test = (_keys(s) for s in sides)
    assert not (train & val or train & test or val & test)
    assert abs(len(split.test) - 0.2 * total) <= 1 and abs(len(split.validation) - 0.1 * total) <= 1
    shares = [c / len(full) for c in full.class_counts()]
    for side, fraction in ((split.test, 0.2), (split.validation, 0.1), (split.train, 0.7)):
        for c, count in enumerate(side.class_counts()):
            assert abs(count - shares[c] * len(side)) <= 2, (side.source, c)  # stratified
            assert abs(count - fraction * full.class_counts()[c]) <= 1.5
    assert all(c >= 1 for c in split.train.class_counts())
    assert "inputs on two sides: 0" in split.summary()


def test_newsgroups_exact_sizes():
    split = load_text_data(TextDataConfig(), seed=3)
    assert [s.class_counts() for s in split.sides().values()] == [(70, 70), (10, 10), (20, 20)]


def test_max_examples_is_a_stratified_seeded_subsample():
    cfg = TextDataConfig(source="chatterbot", max_examples=300, validation_fraction=0.0, test_fraction=0.5)
    split = load_text_data(cfg, seed=0)
    assert len(split.train) + len(split.test) == 300 and len(split.validation) == 0
    full = dataset_module._carrier(cfg).class_counts()
    got = [a + b for a, b in zip(split.train.class_counts(), split.test.class_counts(), strict=True)]
    for c, count in enumerate(got):
        assert abs(count - 300 * full[c] / sum(full)) < 1
    assert load_text_data(cfg, seed=0) == split
    assert set(load_text_data(cfg, seed=1).train.texts) != set(split.train.texts)


def test_identical_inputs_stay_on_one_side():
    labels = [0] * 30 + [1] * 30
    keys = [i % 10 for i in range(60)]  # ten distinct inputs, each six times, with both labels
    parts = stratified_split(labels, keys, [0.2, 0.1], seed=0)
    assert sorted(i for p in parts for i in p) == list(range(60))
    for a in range(3):
        for b in range(a + 1, 3):
            assert not {keys[i] for i in parts[a]} & {keys[i] for i in parts[b]}


def test_file_source_with_pairs_and_labels(tmp_path):
    rows = [
        {"p": f"premise {i}", "h": f"hypothesis {i % 7}", "y": ["yes", "no"][i % 3 == 0]} for i in range(60)
    ]
    (tmp_path / "nli.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TextDataConfig(
        source="nli.jsonl", root=str(tmp_path), text_column="p", text_pair_column="h", label_column="y",
        labels=("no", "yes"),
    )  # fmt: skip
    split = load_text_data(cfg, seed=0)
    assert split.train.label_names == ("no", "yes") and split.train.pairs is not None
    everything = [x for s in split.sides().values() for x in zip(s.texts, s.pairs, s.labels, strict=True)]
    expected = [(r["p"], r["h"], 1 if r["y"] == "yes" else 0) for r in rows]
    assert sorted(everything) == sorted(expected)
    assert Counter(y for *_, y in everything) == {1: 40, 0: 20}
    with pytest.raises(TextDataError, match=r"nli\.jsonl, line 2, column 'y': label 'yes' is not in"):
        load_text_data(cfg.replace(labels=("no", "maybe")), seed=0)


class _FakeDataset:
    """The part of ``datasets.Dataset`` that hub_columns reads."""

    def __init__(self, columns: dict, names: list[str] | None) -> None:
        self.columns, self.column_names = columns, list(columns)
        self.features = {"label": type("ClassLabel", (), {"names": names})()} if names else {}

    def __getitem__(self, key: str) -> list:
        return self.columns[key]


def _fake_hub(splits: dict[str, _FakeDataset], calls: list):
    def load(name, config, split):
        calls.append((name, config, split))
        return splits[split]

    return load


def _nli(n: int, offset: int, labels=None) -> _FakeDataset:
    return _FakeDataset(
        {
            "premise": [f"p{offset + i}" for i in range(n)],
            "hypothesis": [f"h{offset + i}" for i in range(n)],
            "label": labels if labels is not None else [i % 3 for i in range(n)],
        },
        ["entailment", "neutral", "contradiction"],
    )


def test_hub_splits_map_train_and_test_and_carve_validation(monkeypatch):
    calls: list = []
    fake = {
        "train": _nli(90, 0),
        "validation_matched": _nli(30, 1000),
        "test_matched": _nli(5, 2000, [-1] * 5),
    }
    monkeypatch.setattr(dataset_module, "load_hub", _fake_hub(fake, calls))
    cfg = TextDataConfig(
        source="nyu-mll/glue", hub_config="mnli", hub_splits={"train": "train", "test": "validation_matched"},
        text_column="premise", text_pair_column="hypothesis",
    )  # fmt: skip
    split = load_text_data(cfg, seed=0)
    assert calls == [("nyu-mll/glue", "mnli", "train"), ("nyu-mll/glue", "mnli", "validation_matched")]
    assert split.test.texts == tuple(f"p{1000 + i}" for i in range(30))
    assert split.test.source == "nyu-mll/glue[validation_matched]"
    assert split.train.label_names == ("entailment", "neutral", "contradiction")
    assert (len(split.train), len(split.validation)) == (81, 9)  # validation_fraction of the train split
    assert split.validation.class_counts() == (3, 3, 3)
    small = load_text_data(cfg.replace(max_examples=30), seed=0)
    assert (len(small.train) + len(small.validation), len(small.test)) == (30, 30)
    bad = cfg.replace(hub_splits={"train": "train", "test": "test_matched"})
    with pytest.raises(TextDataError, match=r"nyu-mll/glue\[test_matched\], row 0, column 'label': label -1"):
        load_text_data(bad, seed=0)
