"""Local files: five formats give the same records; every malformed file names file, place and column."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unrolled.tasks.text import DataNotFoundError, TextDataError, encode_labels, read_table

ROWS = [
    {"premise": "A man plays a guitar.", "hypothesis": "Someone makes music.", "gold": "entailment"},
    {"premise": 'He said "no", twice.', "hypothesis": "He agreed.", "gold": "contradiction"},
    {"premise": "Rain, then sun.", "hypothesis": "It was a day in May.", "gold": "neutral"},
    {"premise": "Über café naïve — unicode.", "hypothesis": "Text has accents.", "gold": "entailment"},
]
COLUMNS = ("premise", "gold", "hypothesis")  # text, label, pair


def write(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".tsv":  # unquoted, as GLUE's TSVs: a double quote is an ordinary character
        lines = ["\t".join(rows[0]), *("\t".join(str(v) for v in r.values()) for r in rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_formats_give_the_same_records(tmp_path, suffix):
    path = write(tmp_path / f"data{suffix}", ROWS)
    records = read_table(path, *COLUMNS)
    assert [(r.text, r.pair, r.label) for r in records] == [
        (r["premise"], r["hypothesis"], r["gold"]) for r in ROWS
    ]
    single = read_table(path, "hypothesis", "gold")
    assert [r.pair for r in single] == [None] * 4 and single[1].text == "He agreed."
    ids, names = encode_labels([r.label for r in records], None, lambda i: (path, None, None))
    assert names == ("contradiction", "entailment", "neutral") and ids == (1, 0, 2, 1)


def test_integer_labels_are_class_ids(tmp_path):
    rows = [{"text": "a", "label": 2}, {"text": "b", "label": 0}]
    for path in (write(tmp_path / "ints.jsonl", rows), write(tmp_path / "ints.csv", rows)):
        records = read_table(path)
        ids, names = encode_labels([r.label for r in records], None, lambda i, p=path: (p, None, None))
        assert ids == (2, 0) and names == ("0", "1", "2")
        ids, names = encode_labels(
            [r.label for r in records], ("neg", "mid", "pos"), lambda i, p=path: (p, None, None)
        )
        assert ids == (2, 0) and names == ("neg", "mid", "pos")


def test_csv_line_numbers_count_physical_lines(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('text,label\n"first\nspans two lines",pos\n"",neg\n', encoding="utf-8")
    with pytest.raises(TextDataError, match=r"multi\.csv, line 4, column 'text': the text is empty"):
        read_table(path)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8")


MALFORMED = [
    # (file name, content, read_table kwargs, expected message)
    (
        "cols.csv",
        "text,lbl\nhello,pos\n",
        {},
        r"cols\.csv, line 1, column 'label': no column 'label'; the columns are \['text', 'lbl'\]",
    ),
    (
        "cols.jsonl",
        '{"text": "a", "label": "pos"}\n{"text": "b", "gold": "neg"}\n',
        {},
        r"cols\.jsonl, line 2, column 'label': no column 'label'; the columns are \['text', 'gold'\]",
    ),
    (
        "cols.json",
        '[{"text": "a", "label": "x"}, {"label": "y"}]',
        {},
        r"cols\.json, item \[1\], column 'text': no column 'text'",
    ),
    (
        "pair.tsv",
        "text\tlabel\na\tpos\n",
        {"text_pair_column": "hyp"},
        r"pair\.tsv, line 1, column 'hyp': no column 'hyp'; the columns are \['text', 'label'\]",
    ),
    ("empty.csv", "", {}, r"empty\.csv: the file is empty"),
    ("empty.jsonl", "\n  \n", {}, r"empty\.jsonl: the file is empty"),
    ("header.csv", "text,label\n", {}, r"header\.csv: the file holds no records"),
    (
        "bad.jsonl",
        '{"text": "a", "label": "pos"}\n\n{"text": "b", label: "neg"}\n',
        {},
        r"bad\.jsonl, line 3: not valid JSON: Expecting property name enclosed in double quotes \(column 15\)",
    ),
    (
        "bad.json",
        '[{"text": "a",\n  "label": pos}]',
        {},
        r"bad\.json, line 2: not valid JSON: Expecting value",
    ),
    ("list.json", '{"text": "a"}', {}, r"list\.json: expected a JSON list of objects, got dict"),
    (
        "fields.csv",
        "text,label\na,pos\nb,neg,extra\n",
        {},
        r"fields\.csv, line 3: has 3 fields, the header has 2",
    ),
    (
        "blank.csv",
        "text,label\na,pos\n   ,neg\n",
        {},
        r"blank\.csv, line 3, column 'text': the text is empty",
    ),
    (
        "null.jsonl",
        '{"text": null, "label": "pos"}\n',
        {},
        r"null\.jsonl, line 1, column 'text': the text is empty \(null\)",
    ),
    (
        "nolabel.jsonl",
        '{"text": "a", "label": ""}\n',
        {},
        r"nolabel\.jsonl, line 1, column 'label': the label is empty",
    ),
    (
        "floatlabel.jsonl",
        '{"text": "a", "label": 0.5}\n',
        {},
        r"floatlabel\.jsonl, line 1, column 'label': a label must be",
    ),
    (
        "labels.jsonl",
        '{"text": "a", "label": "pos"}\n{"text": "b", "label": "maybe"}\n',
        {"labels": ("neg", "pos")},
        r"labels\.jsonl, line 2, column 'label': label 'maybe' is not in the configured labels \['neg', 'pos'\]",
    ),
    (
        "labels.csv",
        "text,label\na,pos\nb,7\n",
        {"labels": ("neg", "pos")},
        r"labels\.csv, line 3, column 'label': label '7' is not in the configured labels",
    ),
    ("data.txt", "x", {}, r"data\.txt: unsupported file type '\.txt'"),
]


@pytest.mark.parametrize(("name", "content", "kwargs", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_name_file_line_and_column(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_bytes(_bytes(content))
    with pytest.raises(TextDataError, match=message) as info:
        read_table(path, **kwargs)
    assert str(path) in str(info.value)


def test_bad_encoding_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "latin.csv"
    content = "text,label\nfine,pos\ncaf\xe9,neg\n".encode("latin-1")
    path.write_bytes(content)
    offset = content.index(b"\xe9")
    with pytest.raises(
        TextDataError, match=rf"latin\.csv, line 3: not UTF-8 text: byte 0xe9 at byte offset {offset}"
    ):
        read_table(path)


def test_parquet_errors(tmp_path):
    path = write(tmp_path / "t.parquet", [{"sentence": "a", "label": 1}])
    with pytest.raises(
        TextDataError,
        match=r"t\.parquet, column 'text': no column 'text'; the columns are \['sentence', 'label'\]",
    ):
        read_table(path)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(TextDataError, match=r"bad\.parquet: not a Parquet file"):
        read_table(bad)
    empty = write(tmp_path / "e.parquet", [{"text": "a", "label": "x"}])
    pq.write_table(pq.read_table(empty).slice(0, 0), empty)
    with pytest.raises(TextDataError, match=r"e\.parquet: the file has no rows"):
        read_table(empty)
    rows = write(tmp_path / "r.parquet", [{"text": "a", "label": "x"}, {"text": " ", "label": "y"}])
    with pytest.raises(TextDataError, match=r"r\.parquet, row 1, column 'text': the text is empty"):
        read_table(rows)


def test_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "nope.csv"))):
        read_table(tmp_path / "nope.csv")


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path):
    path = tmp_path / "u.jsonl"
    text = "one\u2028two\x1cthree"
    path.write_text(
        json.dumps({"text": text, "label": "a"}, ensure_ascii=False)
        + "\r\n"
        + '{"text": "b", "label": "c"}\n'
    )
    records = read_table(path)
    assert [r.text for r in records] == [text, "b"] and records[1].where == "line 2"
