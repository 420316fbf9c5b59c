"""Typed configs on pydantic v2: frozen models that refuse unknown keys, read from YAML, errors that name the key.

Every config section is a :class:`ConfigModel`. Ranges are field constraints (``Field(ge=1)``), choices are
``Literal`` types, families of sections are unions discriminated on ``kind``, and cross-field rules are
``model_validator``\\ s that raise :func:`~unrolled.validation.check` with a key relative to their section.
:func:`from_dict` validates plain data and turns pydantic's errors into one :class:`ConfigError` whose lines
start with the full key path, e.g. ``methods[2].constraints.alpha: must be in [0, 1), got 1.5``
(:mod:`unrolled.config_errors` does the translation).

This module knows no experiment: each family's config lives with its family, each component's config with
the component (``tasks``, ``train``, ``constrained``, ``perturb``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic_core import PydanticCustomError

from unrolled.config_errors import translate
from unrolled.validation import ConfigError, check

__all__ = [
    "Bool",
    "ConfigError",
    "ConfigModel",
    "Float",
    "Int",
    "Str",
    "apply_overrides",
    "check",
    "dump_yaml",
    "from_dict",
    "load_yaml",
    "to_dict",
]


def _number(value: Any) -> Any:
    """A float field takes ints and numeric strings (YAML 1.1 reads ``1e-3`` as a string), never booleans."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "expected a number")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise PydanticCustomError("float_parsing", "expected a number") from None
    return value


Int = StrictInt
"""An integer; ``true`` and ``2.0`` are refused."""
Float = Annotated[float, BeforeValidator(_number)]
"""A number; integers and numeric strings are taken, booleans refused."""
Bool = StrictBool
Str = StrictStr


class ConfigModel(BaseModel):
    """Base of every config section: frozen (hashable when its fields are), unknown keys forbidden.

    ``MESSAGES`` maps ``(field, pydantic error type)`` to a message of the section's own, for the few
    errors where the generic one would say less (e.g. an empty ``depths`` list).

    Built in Python (``TrainConfig(steps=10)``), a section raises pydantic's ``ValidationError`` as any
    pydantic model does; data from files goes through :func:`from_dict`, which speaks in key paths.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    MESSAGES: ClassVar[dict[tuple[str, str], str]] = {}

    @classmethod
    def resolve_class(cls, data: Any) -> type[ConfigModel]:
        """The class that validates ``data``: ``cls`` itself, or (an Auto-style base) the subclass it names."""
        return cls

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied and validated again (like :func:`dataclasses.replace`)."""
        return from_dict(type(self), {**to_dict(self), **to_dict(changes)})


def from_dict(cls: type[ConfigModel], data: Any, path: str = "") -> Any:
    """Validate plain data into config class ``cls`` (or the class ``cls.resolve_class`` picks for it).

    Args:
        cls: the config class.
        data: a mapping, e.g. a YAML document.
        path: where the section sits in a larger config (prefixes every key in error messages).

    Raises:
        ConfigError: one line per problem, each starting with its full key path.
    """
    target = cls.resolve_class(data)
    try:
        return target.model_validate(data)
    except ValidationError as exc:
        raise translate(exc, target, path) from None


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a config tree, ready for YAML; the inverse of :func:`from_dict`."""
    if isinstance(obj, BaseModel):
        return {name: to_dict(getattr(obj, name)) for name in type(obj).model_fields}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj: Any) -> str:
    """A config (or plain data) as YAML text, keys in field order."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys; list items by index or by their ``name``, as
    ``methods.2.lr`` or, the form config errors print, ``methods[2].lr``).

    Values are parsed as YAML scalars or flow collections (``train.lr=0.003``, ``seeds=[0,1]``).
    Returns a new dict; the input is not modified.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
        parts = re.sub(r"\[([^\]]*)\]", r".\1", key.strip()).split(".")
        if any(not p for p in parts):
            raise ConfigError(f"--set {key}: empty key part (use a.b.0.c or a.b[0].c)")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _descend(node, part, ".".join(parts[: i + 1]))
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, key)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"{key}: cannot set a key inside a {type(node).__name__}")
    return data


def _descend(node: Any, part: str, path: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, path)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            node[part] = {}
        return node[part]
    raise ConfigError(f"{path}: cannot descend into a {type(node).__name__}")


def _list_index(node: list[Any], part: str, path: str) -> int:
    if part.lstrip("-").isdigit():
        i = int(part)
        if not -len(node) <= i < len(node):
            raise ConfigError(f"{path}: index {i} out of range for a list of {len(node)}")
        return i
    for i, item in enumerate(node):
        if isinstance(item, Mapping) and item.get("name") == part:
            return i
    names = [str(item.get("name")) for item in node if isinstance(item, Mapping)]
    raise ConfigError(f"{path}: no list item named {part!r}; names: {', '.join(names)}")
