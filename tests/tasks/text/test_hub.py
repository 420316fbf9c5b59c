"""Hub datasets: offline or unreachable is a quick DataNotFoundError, never a hang or a bare traceback."""

from __future__ import annotations

import json
import socket
import sys
import time

import pytest

from unrolled.tasks.text import (
    DataNotFoundError,
    TextDataConfig,
    TextDataError,
    hub_columns,
    load_hub,
    load_text_data,
)

datasets = pytest.importorskip("datasets")
hub_constants = pytest.importorskip("huggingface_hub.constants")

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture
def no_network(monkeypatch):
    """Record every attempt to resolve or connect, and fail it at once."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_offline_imdb_is_data_not_found_without_network(monkeypatch, no_network):
    # HF_HUB_OFFLINE set after datasets was imported (its own flag still off) must be honoured too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=r"hub dataset 'imdb', split 'train'") as info:
        load_hub("imdb", None, "train")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "source: path/to/file.jsonl" in message
    assert no_network == []
    assert datasets.config.HF_HUB_OFFLINE is False  # restored after the call


def test_unreachable_hub_falls_back_to_the_cache_quickly(monkeypatch, no_network):
    for name in (*OFFLINE_VARIABLES, *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=r"'nyu-mll/glue' \(config 'mnli'\).*unreachable"):
        load_hub("nyu-mll/glue", "mnli", "validation_matched", timeout=1.0)
    assert time.perf_counter() - start < 5
    assert len(no_network) == 1  # the one probe; datasets itself then ran offline


def test_config_source_imdb_offline(no_network):
    with pytest.raises(DataNotFoundError, match="'imdb'"):
        load_text_data(TextDataConfig(source="imdb"), seed=0)
    assert no_network == []


def test_missing_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'unrolled\[hf\]'"):
        load_hub("imdb")


def test_hub_columns_reads_class_labels_and_checks_columns():
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    ds = datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, 0]}, features=features)
    cols = hub_columns(ds, "imdb[train]", "text", "label")
    assert (cols.texts, cols.pairs, cols.labels, cols.label_names) == (
        ("good", "bad"),
        None,
        (1, 0),
        ("neg", "pos"),
    )
    with pytest.raises(
        TextDataError,
        match=r"imdb\[train\], column 'sentence': no column 'sentence'; the columns are \['text', 'label'\]",
    ):
        hub_columns(ds, "imdb[train]", "sentence", "label")
    empty = datasets.Dataset.from_dict({"text": ["ok", " "], "label": ["a", "b"]})
    with pytest.raises(TextDataError, match=r"x\[train\], row 1, column 'text': the text is empty"):
        hub_columns(empty, "x[train]", "text", "label")


def test_load_hub_reads_what_datasets_can_reach_offline(tmp_path, no_network):
    # a local dataset folder goes through the same load_dataset call as a cached hub dataset
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, n in (("train", 8), ("test", 4)):
        rows = [json.dumps({"text": f"{split} {i}", "label": ["a", "b"][i % 2]}) for i in range(n)]
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    ds = load_hub(str(folder), None, "test", cache_dir=str(tmp_path / "cache"))
    cols = hub_columns(ds, "corpus[test]", "text", "label")
    assert cols.texts == ("test 0", "test 1", "test 2", "test 3") and cols.labels == ("a", "b", "a", "b")
    with pytest.raises(
        TextDataError, match=r"split 'dev': Unknown split \"dev\". Should be one of \['train', 'test'\]"
    ):
        load_hub(str(folder), None, "dev", cache_dir=str(tmp_path / "cache"))
    assert no_network == []
