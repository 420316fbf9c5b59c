"""Local text-classification files: CSV, TSV, JSONL, JSON and Parquet into records, with errors that point.

Every problem is a :class:`TextDataError` whose message starts with the file and, where it applies, the place
(``line 7`` in CSV/TSV/JSONL, 1-based and counted in physical lines; ``item [3]`` in a JSON list, 0-based;
``row 3`` in Parquet, 0-based) and the column: ``data.csv, line 7, column 'label': label 'neutral' is not in
the configured labels ['neg', 'pos']``.

Formats:

* ``.csv`` (comma) and ``.tsv`` (tab): a header row names the columns. CSV follows RFC 4180 quoting
  (``csv`` module, quoted fields may span lines); TSV is read without quoting (``csv.QUOTE_NONE``, as GLUE's
  TSVs), so a field holds no tab or newline. A UTF-8 byte-order mark is ignored.
* ``.jsonl`` / ``.ndjson``: one JSON object per line; blank lines are skipped.
* ``.json``: a list of JSON objects.
* ``.parquet``: read with pyarrow (imported on use).

Labels are strings (class names) or integers (class ids); see :func:`encode_labels`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unrolled.carriers import DataNotFoundError

__all__ = [
    "FILE_SUFFIXES",
    "TextDataError",
    "TextRecord",
    "decode_text",
    "encode_labels",
    "json_rows",
    "jsonl_rows",
    "read_table",
]

FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")
"""File suffixes :func:`read_table` reads (case-insensitive)."""


class TextDataError(ValueError):
    """A text data file or source is malformed; the message names the file, the place and the column.

    Attributes:
        path: the file (or source name).
        where: ``"line 7"``, ``"item [3]"``, ``"row 3"``, or None when the whole file is at fault.
        column: the column at fault, or None.
    """

    def __init__(self, path: str | Path, reason: str, where: str | None = None, column: str | None = None):
        place = "".join([f", {where}" if where else "", f", column {column!r}" if column else ""])
        super().__init__(f"{path}{place}: {reason}")
        self.path, self.where, self.column, self.reason = str(path), where, column, reason


@dataclass(frozen=True)
class TextRecord:
    """One example as read from a file: text, optional second text, raw label, and where it was.

    ``label`` is the value as stored: a ``str`` (CSV/TSV always) or an ``int``.
    """

    text: str
    pair: str | None
    label: str | int
    where: str


Place = tuple[str | Path, str | None, str | None]
"""Where a value is: (file or source, ``"line 7"`` / ``"item [3]"`` / ``"row 3"`` or None, column or None)."""


def _error(place: Place, reason: str) -> TextDataError:
    path, where, column = place
    return TextDataError(path, reason, where, column)


def _as_label(value: Any) -> str | int | None:
    """A stored label as ``str`` or ``int`` (an integral float becomes an int); None if unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        return value.strip() if value.strip() else None
    return None


def _as_id(value: str | int) -> int | None:
    """An integer class id from an int or a string of digits (``"2"``, ``"-1"``), else None."""
    if isinstance(value, int):
        return value
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def encode_labels(
    values: Sequence[str | int],
    labels: Sequence[str] | None,
    locate: Callable[[int], Place],
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Class ids and class names for raw labels.

    With ``labels`` (the configured label set, in class-id order) a value that is one of the names takes
    that name's position; otherwise an integer (or a string of digits) in ``[0, len(labels))`` is taken as a
    class id. Without ``labels``: if every value is an integer (or every value a string of digits, as in
    CSV) they are class ids, named ``"0"``, ``"1"``, ... up to the largest; otherwise the names are the
    sorted distinct values.

    Args:
        values: raw labels (``str`` or ``int``), length N.
        labels: the configured label set, or None.
        locate: ``i -> (file, where, column)`` of value i, for error messages.

    Returns:
        (ids ``[N]``, names ``[C]``).

    Raises:
        TextDataError: a label outside the configured set, or a negative class id; names place and value.
    """
    if labels is not None:
        names = tuple(labels)
        index = {name: i for i, name in enumerate(names)}
        ids = []
        for i, value in enumerate(values):
            key = str(value).strip()
            ident = index.get(key)
            if ident is None:
                as_id = _as_id(value)
                ident = as_id if as_id is not None and 0 <= as_id < len(names) else None
            if ident is None:
                raise _error(
                    locate(i),
                    f"label {value!r} is not in the configured labels {list(names)} "
                    f"(nor a class id in [0, {len(names)}))",
                )
            ids.append(ident)
        return tuple(ids), names
    as_ids = [_as_id(v) for v in values]
    all_int = all(isinstance(v, int) for v in values) or all(isinstance(v, str) for v in values)
    if values and all_int and all(a is not None for a in as_ids):
        for i, a in enumerate(as_ids):
            if a is not None and a < 0:
                raise _error(
                    locate(i),
                    f"label {values[i]!r} is a negative class id (unlabelled examples, e.g. of a GLUE test "
                    "split, cannot be used)",
                )
        ids = tuple(int(a) for a in as_ids)  # type: ignore[arg-type]
        return ids, tuple(str(c) for c in range(max(ids) + 1))
    names = tuple(sorted({str(v).strip() for v in values}))
    index = {name: i for i, name in enumerate(names)}
    return tuple(index[str(v).strip()] for v in values), names


def decode_text(path: Path) -> str:
    """The file's text; not UTF-8 -> TextDataError with the line and byte offset of the first bad byte."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TextDataError(
            path,
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} ({exc.reason})",
            f"line {line}",
        ) from None
    if not text.strip():
        raise TextDataError(path, "the file is empty")
    return text


def _delimited(path: Path, text: str, delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``"line N"``, row) for every data row of a CSV/TSV text; the header must be the first row."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    start = 1
    try:
        header = next(reader)
        start = reader.line_num + 1
        for row in reader:
            where = f"line {start}"
            start = reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != len(header):
                raise TextDataError(path, f"has {len(row)} fields, the header has {len(header)}", where)
            yield where, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise TextDataError(path, f"not valid {kind}: {exc}", f"line {start}") from None


def _header_columns(text: str, delimiter: str) -> list[str]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting), [])


def jsonl_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    # split on "\n" only: JSON strings may hold U+2028 and other characters str.splitlines() breaks on
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TextDataError(
                path, f"not valid JSON: {exc.msg} (column {exc.colno})", f"line {number}"
            ) from None
        if not isinstance(obj, dict):
            raise TextDataError(path, f"expected a JSON object, got {type(obj).__name__}", f"line {number}")
        yield f"line {number}", obj


def json_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TextDataError(
            path, f"not valid JSON: {exc.msg} (column {exc.colno})", f"line {exc.lineno}"
        ) from None
    if not isinstance(data, list):
        raise TextDataError(path, f"expected a JSON list of objects, got {type(data).__name__}")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise TextDataError(path, f"expected a JSON object, got {type(obj).__name__}", f"item [{i}]")
        yield f"item [{i}]", obj


def _parquet(path: Path, columns: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with the hf extra
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from exc
    try:
        present = list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a file that is not Parquet
        raise TextDataError(path, f"not a Parquet file: {exc}") from None
    _check_columns(path, columns, present, None)
    table = pq.read_table(path, columns=columns)
    if table.num_rows == 0:
        raise TextDataError(path, "the file has no rows")
    data = table.to_pydict()
    for i in range(table.num_rows):
        yield f"row {i}", {name: data[name][i] for name in columns}


def _check_columns(path: Path, wanted: list[str], present: Sequence[str], where: str | None) -> None:
    for column in wanted:
        if column not in present:
            raise TextDataError(path, f"no column {column!r}; the columns are {list(present)}", where, column)


def _text(path: Path, value: Any, where: str, column: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        if value is None:
            raise TextDataError(path, "the text is empty (null)", where, column)
        raise TextDataError(path, f"expected text, got {type(value).__name__}", where, column)
    text = str(value)
    if not text.strip():
        raise TextDataError(path, "the text is empty", where, column)
    return text


def read_table(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    labels: Sequence[str] | None = None,
) -> list[TextRecord]:
    """Read a labelled text file (format from its suffix, see :data:`FILE_SUFFIXES`).

    Args:
        path: the file.
        text_column, label_column: the columns (keys) holding the text and the label.
        text_pair_column: the column of the second text for sentence pairs, or None.
        labels: the configured label set; when given, every label is checked against it
            (see :func:`encode_labels`).

    Returns:
        One :class:`TextRecord` per row, in file order (at least one).

    Raises:
        DataNotFoundError: the file does not exist.
        TextDataError: unsupported suffix, empty file, bad encoding, bad JSON, a missing column (the columns
            present are listed), wrong field count, an empty text or label, a label outside ``labels``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise TextDataError(path, f"unsupported file type {suffix!r}; one of {', '.join(FILE_SUFFIXES)}")
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file")
    columns = [text_column, *([text_pair_column] if text_pair_column else []), label_column]
    rows: Iterator[tuple[str, dict[str, Any]]]
    if suffix == ".parquet":
        rows = _parquet(path, columns)
    else:
        text = decode_text(path)
        if suffix in (".csv", ".tsv"):
            delimiter = "," if suffix == ".csv" else "\t"
            _check_columns(path, columns, _header_columns(text, delimiter), "line 1")
            rows = _delimited(path, text, delimiter)
        else:
            rows = jsonl_rows(path, text) if suffix in (".jsonl", ".ndjson") else json_rows(path, text)
    records = []
    for where, row in rows:
        if suffix in (".jsonl", ".ndjson", ".json"):
            _check_columns(path, columns, list(row), where)
        first = _text(path, row[text_column], where, text_column)
        second = _text(path, row[text_pair_column], where, text_pair_column) if text_pair_column else None
        label = _as_label(row[label_column])
        if label is None:
            raw = row[label_column]
            reason = (
                "the label is empty"
                if raw in (None, "")
                else f"a label must be a string or an integer, got {raw!r}"
            )
            raise TextDataError(path, reason, where, label_column)
        records.append(TextRecord(first, second, label, where))
    if not records:
        raise TextDataError(path, "the file holds no records")
    if labels is not None:
        encode_labels([r.label for r in records], labels, lambda i: (path, records[i].where, label_column))
    return records
