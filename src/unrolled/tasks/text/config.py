"""The config of the text-classification data (:class:`TextDataConfig`), validated on load."""

from __future__ import annotations

import difflib
import re
from pathlib import Path, PurePath
from typing import Annotated, Literal

from pydantic import Field, model_validator

from unrolled.config import ConfigModel, Float, Int, Str
from unrolled.tasks.text.carriers import SOURCES
from unrolled.tasks.text.files import FILE_SUFFIXES
from unrolled.validation import check

__all__ = ["HUB_SPLIT_KEYS", "TextDataConfig", "source_kind"]

HUB_SPLIT_KEYS = ("train", "validation", "test")
"""Our split names that ``hub_splits`` may map to a hub dataset's split names."""

# suffixes that mark a file we cannot read (rather than a hub dataset name)
_OTHER_FILE_SUFFIXES = (".txt", ".xlsx", ".xls", ".gz", ".zip", ".bz2", ".xz", ".arrow", ".feather", ".pkl")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Fraction = Annotated[Float, Field(ge=0, lt=1)]


def source_kind(source: str) -> Literal["carrier", "file", "hub"]:
    """What a source string names: a registered ``carrier`` (:data:`SOURCES`), a local ``file`` (a suffix of
    :data:`~unrolled.tasks.text.files.FILE_SUFFIXES`, or a path starting with ``/``, ``./``, ``../`` or
    ``~``), or else a Hugging Face ``hub`` dataset (``imdb``, ``nyu-mll/glue``)."""
    if source in SOURCES:
        return "carrier"
    suffix = PurePath(source).suffix.lower()
    if suffix in FILE_SUFFIXES or suffix in _OTHER_FILE_SUFFIXES:
        return "file"
    if source.startswith(("/", "./", "../", "~", ".\\")) or "\\" in source:
        return "file"
    return "hub"


class TextDataConfig(ConfigModel):
    """Text-classification data: single texts or sentence pairs with integer labels (docs/DATA_TEXT.md).

    ``source`` is a registered carrier (``newsgroups``, ``chatterbot``), a local file (``.csv``, ``.tsv``,
    ``.jsonl``, ``.json``, ``.parquet``; a relative path resolves under ``root``) or a Hugging Face hub
    dataset (``imdb``; ``nyu-mll/glue`` with ``hub_config: mnli``). Carriers have fixed fields: the column
    options apply to files and hub datasets.

    Without ``hub_splits`` all examples (for a hub dataset: its ``train`` split) are split by seed into
    train / validation / test, stratified by label. ``hub_splits`` maps our ``train`` (required),
    ``validation`` and ``test`` to the hub's split names; a side it does not map is carved from train
    (``validation_fraction`` and ``test_fraction`` of the train split).

    ``labels`` is the label set in class-id order; when null, the sorted distinct labels found (integer
    labels, or labels that are all strings of digits, are class ids). ``max_examples`` keeps a seeded,
    stratified subsample (of the whole data, or of each hub split). ``max_length`` caps tokens per example
    (both texts of a pair together).
    """

    kind: Literal["text"] = "text"
    source: Str = "newsgroups"
    hub_config: Str | None = None
    hub_splits: dict[Str, Str] | None = None
    text_column: Str = "text"
    text_pair_column: Str | None = None
    label_column: Str = "label"
    labels: tuple[Str, ...] | None = None
    validation_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.2
    max_examples: Annotated[Int, Field(ge=1)] | None = None
    max_length: Annotated[Int, Field(ge=4)] = 128
    root: Str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TextDataConfig:
        source = self.source.strip()
        check(
            bool(source) and source == self.source,
            "source",
            f"must be a non-empty name or path, got {self.source!r}",
        )
        kind = source_kind(source)
        if kind == "file":
            suffix = PurePath(source).suffix.lower()
            check(
                suffix in FILE_SUFFIXES,
                "source",
                f"unsupported file type {suffix or '(none)'!r} in {source!r}; one of {', '.join(FILE_SUFFIXES)}",
            )
        if kind == "hub":
            close = difflib.get_close_matches(source, list(SOURCES), n=1, cutoff=0.75)
            hint = f"; did you mean the carrier {close[0]!r}?" if close else ""
            check(
                bool(_HUB_NAME.match(source)),
                "source",
                f"{source!r} is not a registered source ({', '.join(SOURCES)}), a file "
                f"({', '.join(FILE_SUFFIXES)}) or a hub dataset name (e.g. 'imdb', 'nyu-mll/glue'){hint}",
            )
        for key in ("hub_config", "hub_splits"):
            check(
                getattr(self, key) is None or kind == "hub",
                key,
                f"only for a hub dataset source; {source!r} is a {kind}",
            )
        if self.hub_config is not None:
            check(bool(self.hub_config.strip()), "hub_config", "must not be empty (or null)")
        if self.hub_splits is not None:
            for ours, theirs in self.hub_splits.items():
                check(
                    ours in HUB_SPLIT_KEYS,
                    f"hub_splits.{ours}",
                    f"unknown split; keys are {', '.join(HUB_SPLIT_KEYS)}",
                )
                check(bool(theirs.strip()), f"hub_splits.{ours}", "must name a split of the hub dataset")
            check(
                "train" in self.hub_splits, "hub_splits", "must map 'train' (e.g. {train: train, test: test})"
            )
        for key in ("text_column", "label_column", "text_pair_column"):
            value = getattr(self, key)
            check(value is None or bool(value.strip()), key, "must not be empty")
        columns = [self.text_column, self.text_pair_column, self.label_column]
        used = [c for c in columns if c is not None]
        check(len(set(used)) == len(used), "label_column", f"the columns must differ, got {used}")
        if self.labels is not None:
            check(len(self.labels) >= 2, "labels", f"needs at least two labels, got {list(self.labels)}")
            check(
                len(set(self.labels)) == len(self.labels),
                "labels",
                f"lists a label twice: {list(self.labels)}",
            )
            for i, label in enumerate(self.labels):
                check(bool(label.strip()), f"labels[{i}]", "must not be empty")
        check(
            self.validation_fraction + self.test_fraction < 1,
            "test_fraction",
            f"validation_fraction + test_fraction must be < 1, got "
            f"{self.validation_fraction} + {self.test_fraction}",
        )
        return self

    @property
    def source_kind(self) -> Literal["carrier", "file", "hub"]:
        """``carrier``, ``file`` or ``hub`` (see :func:`source_kind`)."""
        return source_kind(self.source)

    def source_path(self) -> Path:
        """The file a ``file`` source names: ``~`` expanded, a relative path under ``root`` when set."""
        path = Path(self.source).expanduser()
        if not path.is_absolute() and self.root is not None:
            path = Path(self.root).expanduser() / path
        return path
