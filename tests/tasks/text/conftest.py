"""Shared fixtures of the text-data tests: the MiniLM tokenizer (from its carrier, offline)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from unrolled.tasks.text import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())
