"""Labelled texts (:class:`TextExamples`) and the seeded, stratified split of a :class:`TextDataConfig`.

:func:`load_text_data` resolves the source (carrier, file or hub dataset), applies ``max_examples`` (a
seeded subsample, stratified by label) and splits by seed into train / validation / test, stratified by
label. Identical inputs (same text, same second text) always land on the same side, so no text is on two
sides even when a source repeats it. The same seed gives the same split; random draws come from
``derive_seed(seed, "text", ...)``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from unrolled.seeding import derive_seed
from unrolled.tasks.text.carriers import LabelledTexts, chatterbot_topics, newsgroups
from unrolled.tasks.text.config import TextDataConfig
from unrolled.tasks.text.files import TextDataError, encode_labels, read_table
from unrolled.tasks.text.hub import hub_columns, load_hub

__all__ = ["TextExamples", "TextSplit", "load_text_data", "stratified_split", "stratified_subsample"]


@dataclass(frozen=True)
class TextExamples:
    """N labelled examples: single texts, or sentence pairs when ``pairs`` is not None.

    Attributes:
        texts: the (first) texts, ``[N]``.
        pairs: the second texts ``[N]``, or None for single texts.
        labels: class ids ``[N]`` in ``[0, C)``.
        label_names: the class names ``[C]``, in class-id order.
        source: where the examples come from (carrier name, file path, ``name[split]``).
    """

    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.texts) or (
            self.pairs is not None and len(self.pairs) != len(self.texts)
        ):
            raise ValueError(
                f"{self.source}: {len(self.texts)} texts, {len(self.labels)} labels, "
                f"{'no' if self.pairs is None else len(self.pairs)} pairs: lengths must match"
            )
        bad = [y for y in self.labels if not 0 <= y < len(self.label_names)]
        if bad:
            raise ValueError(
                f"{self.source}: class ids {sorted(set(bad))[:5]} outside [0, {len(self.label_names)})"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        """C, the number of label names."""
        return len(self.label_names)

    def subset(self, indices: Sequence[int]) -> TextExamples:
        """The examples at ``indices`` (in that order), with the same label names and source."""
        idx = list(indices)
        return TextExamples(
            tuple(self.texts[i] for i in idx),
            None if self.pairs is None else tuple(self.pairs[i] for i in idx),
            tuple(self.labels[i] for i in idx),
            self.label_names,
            self.source,
        )

    def class_counts(self) -> tuple[int, ...]:
        """Examples per class, ``[C]``."""
        counts = Counter(self.labels)
        return tuple(counts.get(c, 0) for c in range(self.num_classes))

    def inputs(self) -> list[tuple[str, str | None]]:
        """(text, second text or None) per example: identical inputs compare equal."""
        pairs = self.pairs if self.pairs is not None else (None,) * len(self.texts)
        return list(zip(self.texts, pairs, strict=True))


@dataclass(frozen=True)
class TextSplit:
    """Train, validation and test examples with the same label names, no input on two sides."""

    train: TextExamples
    validation: TextExamples
    test: TextExamples

    def sides(self) -> dict[str, TextExamples]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def summary(self) -> str:
        """Source, sizes, per-class counts of every side, and inputs shared by two sides (0 unless a hub
        dataset's own splits share them)."""
        names = self.train.label_names
        lines = [f"source: {self.train.source}; {len(names)} classes; pairs: {self.train.pairs is not None}"]
        for side, ex in self.sides().items():
            counts = ", ".join(f"{n}: {c}" for n, c in zip(names, ex.class_counts(), strict=True))
            lines.append(f"{side}: {len(ex)} ({counts})")
        seen = {side: set(ex.inputs()) for side, ex in self.sides().items()}
        shared = len(seen["train"] & seen["test"]) + len(seen["validation"] & (seen["train"] | seen["test"]))
        lines.append(f"inputs on two sides: {shared}")
        return "\n".join(lines)


def _largest_remainder(sizes: Sequence[int], total: int, caps: Sequence[int]) -> list[int]:
    """Integers q_c <= caps[c] proportional to ``sizes`` summing to ``total`` (or as close as caps allow)."""
    n = sum(sizes)
    if n == 0 or total <= 0:
        return [0] * len(sizes)
    exact = [s * total / n for s in sizes]
    quotas = [min(int(e), cap) for e, cap in zip(exact, caps, strict=True)]
    order = sorted(range(len(sizes)), key=lambda c: (-(exact[c] - int(exact[c])), c))
    while sum(quotas) < total:
        grown = False
        for c in order:
            if sum(quotas) < total and quotas[c] < caps[c]:
                quotas[c] += 1
                grown = True
        if not grown:
            break
    return quotas


def stratified_subsample(labels: Sequence[int], count: int, seed: int, *tags: object) -> list[int]:
    """``count`` indices (sorted), per class in proportion to its size (largest remainder), drawn at random
    with ``derive_seed(seed, *tags)``; all indices when ``count >= len(labels)``."""
    if count >= len(labels):
        return list(range(len(labels)))
    classes = sorted(set(labels))
    members = {c: [i for i, y in enumerate(labels) if y == c] for c in classes}
    sizes = [len(members[c]) for c in classes]
    quotas = _largest_remainder(sizes, count, sizes)
    rng = random.Random(derive_seed(seed, *tags))
    chosen = [i for c, q in zip(classes, quotas, strict=True) for i in rng.sample(members[c], q)]
    return sorted(chosen)


def stratified_split(
    labels: Sequence[int], keys: Sequence[object], fractions: Sequence[float], seed: int, *tags: object
) -> list[list[int]]:
    """Split indices into a remainder and one part per fraction, stratified by label, grouped by key.

    Examples with equal ``keys`` (identical inputs) form one group and go to the same part; a group's
    class is its first example's label. Per class, the groups are shuffled (``derive_seed(seed, *tags)``)
    and part k takes a quota of them: ``fractions[k]`` of all groups, shared among classes in proportion
    to their group counts (largest remainder), so that each class keeps at least one group in the
    remainder when it has any.

    Returns:
        ``[remainder, part_0, part_1, ...]``, each a sorted list of indices; together a partition.
    """
    groups: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    classes = sorted(set(labels))
    by_class: dict[int, list[list[int]]] = {c: [] for c in classes}
    for members in groups.values():
        by_class[labels[members[0]]].append(members)
    rng = random.Random(derive_seed(seed, *tags))
    for c in classes:
        rng.shuffle(by_class[c])
    sizes = [len(by_class[c]) for c in classes]
    room = [max(s - 1, 0) for s in sizes]  # the remainder keeps one group per class
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    taken = [0] * len(classes)
    for k, fraction in enumerate(fractions):
        caps = [r - t for r, t in zip(room, taken, strict=True)]
        quotas = _largest_remainder(sizes, round(fraction * sum(sizes)), caps)
        for j, c in enumerate(classes):
            for members in by_class[c][taken[j] : taken[j] + quotas[j]]:
                parts[k + 1].extend(members)
            taken[j] += quotas[j]
    for j, c in enumerate(classes):
        for members in by_class[c][taken[j] :]:
            parts[0].extend(members)
    return [sorted(p) for p in parts]


def _relabel(data: LabelledTexts, labels: Sequence[str] | None, source: str) -> TextExamples:
    names = [data.label_names[y] for y in data.labels]
    ids, label_names = encode_labels(
        names, labels or data.label_names, lambda i: (source, f"example {i}", None)
    )
    return TextExamples(data.texts, None, ids, label_names, source)


def _carrier(cfg: TextDataConfig) -> TextExamples:
    data = newsgroups() if cfg.source == "newsgroups" else chatterbot_topics()
    return _relabel(data, cfg.labels, cfg.source)


def _file(cfg: TextDataConfig) -> TextExamples:
    path = cfg.source_path()
    records = read_table(path, cfg.text_column, cfg.label_column, cfg.text_pair_column, cfg.labels)
    ids, names = encode_labels(
        [r.label for r in records], cfg.labels, lambda i: (path, records[i].where, cfg.label_column)
    )
    pairs = tuple(r.pair or "" for r in records) if cfg.text_pair_column else None
    return TextExamples(tuple(r.text for r in records), pairs, ids, names, str(path))


def _hub(cfg: TextDataConfig) -> dict[str, TextExamples]:
    """Our split name -> examples of each hub split asked for (``{"train": ...}`` without hub_splits)."""
    splits = cfg.hub_splits or {"train": "train"}
    columns, where = {}, {}
    for ours, theirs in splits.items():
        name = f"{cfg.source}[{theirs}]"
        dataset = load_hub(cfg.source, cfg.hub_config, theirs)
        columns[ours] = hub_columns(dataset, name, cfg.text_column, cfg.label_column, cfg.text_pair_column)
        where[ours] = name
    values: list[str | int] = []
    places: list[tuple[str, str, str]] = []
    for ours, col in columns.items():
        for i, value in enumerate(col.labels):
            if col.label_names is not None and isinstance(value, int):
                if value < 0:
                    raise TextDataError(
                        where[ours],
                        f"label {value} marks an unlabelled example (e.g. a GLUE test split); map hub_splits "
                        "to a labelled split such as validation_matched",
                        f"row {i}",
                        cfg.label_column,
                    )
                value = col.label_names[value]
            values.append(value)
            places.append((where[ours], f"row {i}", cfg.label_column))
    feature_names = next((c.label_names for c in columns.values() if c.label_names is not None), None)
    ids, names = encode_labels(values, cfg.labels or feature_names, lambda i: places[i])
    out, start = {}, 0
    for ours, col in columns.items():
        n = len(col.texts)
        out[ours] = TextExamples(col.texts, col.pairs, ids[start : start + n], names, where[ours])
        start += n
    return out


def _subsample(examples: TextExamples, cfg: TextDataConfig, seed: int, tag: str) -> TextExamples:
    if cfg.max_examples is None or cfg.max_examples >= len(examples):
        return examples
    return examples.subset(
        stratified_subsample(examples.labels, cfg.max_examples, seed, "text", "subsample", tag)
    )


def load_text_data(cfg: TextDataConfig, seed: int) -> TextSplit:
    """Load ``cfg.source`` and split it by ``seed`` (see the module docstring and docs/DATA_TEXT.md).

    Without ``hub_splits``: the examples (after ``max_examples``) are split into test
    (``test_fraction``), validation (``validation_fraction``) and train (the rest), stratified by label.
    With ``hub_splits``: each hub split is subsampled to ``max_examples``; validation and test come from
    the hub where mapped, else are carved from train with their fractions.

    Raises:
        DataNotFoundError: a carrier, file or hub dataset is not available (says how to get it).
        TextDataError: a malformed file or hub split (names the place), or a side left empty.
    """
    kind = cfg.source_kind
    if kind == "hub":
        hub = _hub(cfg)
        sides = {ours: _subsample(ex, cfg, seed, ours) for ours, ex in hub.items()}
    elif kind == "carrier":
        sides = {"train": _subsample(_carrier(cfg), cfg, seed, "train")}
    else:
        sides = {"train": _subsample(_file(cfg), cfg, seed, "train")}
    pool = sides["train"]
    carve = [side for side in ("test", "validation") if side not in sides]
    fractions = [cfg.test_fraction if side == "test" else cfg.validation_fraction for side in carve]
    parts = stratified_split(pool.labels, pool.inputs(), fractions, seed, "text", "split")
    sides["train"] = pool.subset(parts[0])
    for side, part in zip(carve, parts[1:], strict=True):
        sides[side] = pool.subset(part)
    split = TextSplit(sides["train"], sides["validation"], sides["test"])
    if len(split.train) == 0:
        raise TextDataError(pool.source, "the train side is empty; lower the fractions or raise max_examples")
    return split
