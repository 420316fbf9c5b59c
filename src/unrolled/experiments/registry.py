"""Experiment families by ``task.kind``: the built-in ones, plug-ins, and families registered at run time.

Like ``transformers``' Auto classes: a config's ``task.kind`` names its family, and the family brings its own
config class, units, aggregation and report. Three ways in:

* built in: :data:`BUILTIN` maps a kind to the module that defines and registers it (imported on first use,
  so ``unrolled run`` on a regression config never imports the video stack);
* plug-ins: a package that declares an entry point in the group ``unrolled.experiments`` (the entry point
  loads a module that calls :func:`register_family`), found by worker processes too;
* at run time: :func:`register_family` from user code or a test (then ``--workers 1``: spawned worker
  processes import only built-ins and plug-ins).
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import TypeVar

from unrolled.experiments.family import ExperimentFamily
from unrolled.validation import ConfigError

BUILTIN: dict[str, str] = {
    "regression": "unrolled.experiments.regression",
    "video": "unrolled.experiments.denoising",
    "text": "unrolled.experiments.text",
    "audit": "unrolled.experiments.audit",
    "sft": "unrolled.experiments.sft",
    "icl": "unrolled.experiments.icl",
}
"""The built-in families: ``task.kind`` -> the module that registers it."""

ENTRY_POINT_GROUP = "unrolled.experiments"

_FAMILIES: dict[str, ExperimentFamily] = {}
_F = TypeVar("_F", bound=ExperimentFamily)


def register_family(family: _F, *, replace: bool = False) -> _F:
    """Register ``family`` for its ``kind``; returns it. A kind already taken needs ``replace=True``."""
    kind = getattr(family, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{type(family).__name__} needs a `kind` (the task.kind it runs)")
    if kind in _FAMILIES and not replace and type(_FAMILIES[kind]) is not type(family):
        raise ValueError(
            f"task.kind {kind!r} is already registered to {type(_FAMILIES[kind]).__name__}; "
            "pass replace=True to replace it"
        )
    _FAMILIES[kind] = family
    return family


def unregister_family(kind: str) -> None:
    """Forget the family registered for ``kind`` (tests use it to clean up)."""
    _FAMILIES.pop(kind, None)


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _FAMILIES:
            ep.load()


def get_family(kind: str) -> ExperimentFamily:
    """The family registered for ``task.kind``; built-ins and plug-ins are imported on first use.

    Raises:
        ConfigError: no family runs this kind (the message lists the known kinds).
    """
    if kind not in _FAMILIES and kind in BUILTIN:
        importlib.import_module(BUILTIN[kind])
    if kind not in _FAMILIES:
        _load_plugins()
    if kind not in _FAMILIES:
        known = known_kinds()
        hint = difflib.get_close_matches(str(kind), known, n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"task.kind: unknown kind {kind!r}{more}; one of {', '.join(known)}",
            key="task.kind",
            reason=f"unknown kind {kind!r}",
        )
    return _FAMILIES[kind]


def all_families() -> list[ExperimentFamily]:
    """Every family: the built-ins, the plug-ins, and those registered at run time."""
    for module in BUILTIN.values():
        importlib.import_module(module)
    _load_plugins()
    return list(_FAMILIES.values())


def known_kinds() -> list[str]:
    """The task kinds that can be run (without importing any family)."""
    return sorted(set(BUILTIN) | set(_FAMILIES) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
