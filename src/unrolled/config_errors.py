"""Pydantic validation errors as :class:`ConfigError` messages that name the full key path.

Pydantic's own report is written for developers (``methods.2.ut.constraints.alpha  Input should be less than
1 [type=less_than, ...]``). A user needs the key as they wrote it and what is allowed:
``methods[2].constraints.alpha: must be in [0, 1), got 1.5``. To say that, :func:`translate` walks the config
classes along each error's location: it drops the discriminator tags pydantic inserts for unions, finds the
field's constraints (both ends of an interval), its ``Literal`` choices, the keys a section allows (for a
misspelt one), and a section's own message for an error (``ConfigModel.MESSAGES``).
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from unrolled.validation import ConfigError


@dataclass
class _Place:
    """Where an error points: the clean path, and what the config classes say about that place."""

    path: list[str | int] = field(default_factory=list)
    owner: type[BaseModel] | None = None  # the model whose field the path ends in (or whose key is unknown)
    name: str | None = None  # that field's name
    annotation: Any = None  # the type expected at the end of the path (None if unknown)
    metadata: list[Any] = field(default_factory=list)  # constraints on it (Ge, Lt, ...)


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` (collecting its constraints) and ``Optional``."""
    meta: list[Any] = []
    while True:
        if get_origin(tp) is Annotated:
            args = get_args(tp)
            tp = args[0]
            for m in args[1:]:
                meta.extend(m.metadata if isinstance(m, FieldInfo) else [m])
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp, meta


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _kinds(model: type[BaseModel]) -> tuple[str, ...]:
    """The ``kind`` values a model accepts (its ``Literal`` kind field), or () if it has none."""
    info = model.model_fields.get("kind")
    if info is None:
        return ()
    tp, _ = _unwrap(info.annotation)
    return tuple(get_args(tp)) if get_origin(tp) is Literal else ()


def _union_members(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if a is not type(None)]
    return []


def locate(root: type[BaseModel], loc: tuple[str | int, ...]) -> _Place:
    """Follow ``loc`` (pydantic's error location) through the config classes from ``root``."""
    place = _Place(annotation=root)
    tp: Any = root
    for item in loc:
        if item == "[key]":  # pydantic marks errors in a mapping's keys this way
            continue
        tp, meta = _unwrap(tp) if tp is not None else (None, [])
        members = [_unwrap(m)[0] for m in _union_members(tp)]
        if members:  # a union: pydantic inserts the chosen member's tag (a kind, or a type's name)
            chosen = next((m for m in members if _is_model(m) and item in _kinds(m)), None)
            tp = chosen
            continue
        if _is_model(tp):
            place.owner, place.name = tp, str(item)
            place.path.append(item)
            info = tp.model_fields.get(str(item))
            tp = info.annotation if info is not None else None
            place.metadata = list(info.metadata) if info is not None else []
            continue
        origin = get_origin(tp)
        place.path.append(item)
        if origin in (tuple, list) and isinstance(item, int):
            args = [a for a in get_args(tp) if a is not Ellipsis]
            tp = args[min(item, len(args) - 1)] if args else None
        elif origin is dict:
            tp = get_args(tp)[1] if get_args(tp) else None
        else:
            tp = None
        place.metadata = []
    if tp is not None:
        tp, meta = _unwrap(tp)
        place.metadata += meta
    place.annotation = tp
    return place


def key_path(items: list[str | int], prefix: str = "") -> str:
    """``["methods", 2, "alpha"]`` -> ``methods[2].alpha`` (after ``prefix``, if given)."""
    out = prefix
    for item in items:
        if isinstance(item, str) and item.isidentifier():
            out += f".{item}" if out else item
        else:  # list indices and mapping keys that are numbers (a depth, a noise level γ)
            out += f"[{item}]"
    return out


def _join(path: str, key: str) -> str:
    if not path:
        return key
    return path + key if key.startswith("[") else f"{path}.{key}"


def _fmt(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range(meta: list[Any], value: Any) -> str:
    """'must be in [0, 1), got 1.5' from the field's own bounds (both ends, whichever was broken)."""
    lo = hi = None
    for m in meta:
        if isinstance(m, at.Ge):
            lo = ("[", ">=", m.ge)
        elif isinstance(m, at.Gt):
            lo = ("(", ">", m.gt)
        elif isinstance(m, at.Le):
            hi = ("]", "<=", m.le)
        elif isinstance(m, at.Lt):
            hi = (")", "<", m.lt)
    if lo and hi:
        return f"must be in {lo[0]}{_num(lo[2])}, {_num(hi[2])}{hi[0]}, got {value!r}"
    bound = lo or hi
    assert bound is not None
    return f"must be {bound[1]} {_num(bound[2])}, got {value!r}"


def _choices(annotation: Any) -> list[Any]:
    return list(get_args(annotation)) if get_origin(annotation) is Literal else []


def _tags(annotation: Any) -> list[str]:
    """The kinds a union of config classes accepts."""
    return [k for m in _union_members(annotation) for k in _kinds(_unwrap(m)[0])]


def _unknown_kind(kind: Any, known: list[str]) -> str:
    hint = difflib.get_close_matches(str(kind), known, n=1)
    more = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown kind {kind!r}{more}; one of {', '.join(known)}"


def message(err: Any, root: type[BaseModel], prefix: str = "") -> str:
    """One line for one pydantic error (an ``ErrorDetails`` mapping)."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    place = locate(root, tuple(err["loc"]))
    path = key_path(place.path, prefix)
    messages = getattr(place.owner, "MESSAGES", {})
    own = messages.get((place.name, kind))
    if own:
        return f"{path}: {own}"
    if kind in ("value_error", "assertion_error"):
        error = ctx.get("error")
        if isinstance(error, ConfigError) and error.key is not None:
            return f"{_join(path, error.key)}: {error.reason}"
        text = str(error) if error is not None else err["msg"]
        return f"{path or prefix or 'config'}: {text}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        where = _join(path, "kind") if path or not prefix else _join(prefix, "kind")
        known = _tags(place.annotation) or re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        if kind == "union_tag_not_found":
            return f"{where}: missing; one of {', '.join(known)}"
        return f"{where}: {_unknown_kind(ctx.get('tag'), known)}"
    if kind == "missing":
        return f"{path}: missing (required)"
    if kind == "extra_forbidden":
        allowed = list(place.owner.model_fields) if place.owner is not None else []
        hint = difflib.get_close_matches(str(place.path[-1]), allowed, n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{path}: unknown key{more}; allowed keys: {', '.join(sorted(allowed))}"
    if kind == "literal_error":
        choices = _choices(place.annotation)
        if place.name == "kind" and choices:
            return f"{path}: {_unknown_kind(value, [str(c) for c in choices])}"
        allowed = ", ".join(map(repr, choices)) if choices else str(ctx.get("expected"))
        return f"{path}: must be one of {allowed}; got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{path}: {_range(place.metadata or _ctx_bounds(ctx), value)}"
    if kind in ("too_short", "too_long"):
        lo, hi, n = ctx.get("min_length"), ctx.get("max_length"), ctx.get("actual_length")
        lo = lo if lo is not None else _length(place.metadata, at.MinLen)
        hi = hi if hi is not None else _length(place.metadata, at.MaxLen)
        if lo is not None and lo == hi:
            return f"{path}: needs {lo} entries, got {n}"
        if kind == "too_short":
            return (
                f"{path}: must not be empty" if lo == 1 else f"{path}: needs at least {lo} entries, got {n}"
            )
        return f"{path}: has at most {hi} entries, got {n}"
    what = _EXPECTED.get(kind)
    if what is not None:
        return f"{path}: expected {what}, got {_fmt(value)}"
    text = err["msg"][:1].lower() + err["msg"][1:]
    return f"{path or prefix or 'config'}: {text}, got {_fmt(value)}"


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _ctx_bounds(ctx: dict[str, Any]) -> list[Any]:
    cls = {"ge": at.Ge, "gt": at.Gt, "le": at.Le, "lt": at.Lt}
    return [cls[k](v) for k, v in ctx.items() if k in cls]


def _length(meta: list[Any], kind: type) -> Any:
    for m in meta:
        if isinstance(m, kind):
            return m.min_length if isinstance(m, at.MinLen) else m.max_length
    return None


def translate(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> ConfigError:
    """A :class:`ConfigError` for every problem pydantic found, one line each, in the config's own terms."""
    errors = exc.errors()
    inner = [tuple(e["loc"]) for e in errors]
    # a list with a bad entry also fails its length check (pydantic counts only the good ones): say one thing
    errors = [
        e
        for e in errors
        if e["type"] not in ("too_short", "too_long")
        or not any(len(loc) > len(e["loc"]) and loc[: len(e["loc"])] == tuple(e["loc"]) for loc in inner)
    ]
    lines = list(dict.fromkeys(message(err, root, prefix) for err in errors))
    first = lines[0]
    key, _, reason = first.partition(": ")
    text = first + "".join(f"\n  also: {line}" for line in lines[1:])
    return ConfigError(text, key=key, reason=reason)


__all__ = ["key_path", "locate", "message", "translate"]
