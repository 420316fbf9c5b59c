"""The experiment config: fields every family shares, loading from YAML, dumping, and the JSON Schema.

:class:`ExperimentConfig` works like ``transformers``' ``AutoConfig``: validating a YAML document with it picks
the family's own subclass from ``task.kind`` (regression when the task names no kind), so
``load_config("configs/demo.yaml")`` returns a :class:`~unrolled.experiments.regression.config.
RegressionExperiment`. Each family's subclass adds its ``task``, ``methods`` and whatever else it needs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, TypeAdapter, model_validator

from unrolled.config import ConfigModel, Int, Str, apply_overrides, dump_yaml, from_dict, load_yaml
from unrolled.experiments.registry import all_families, get_family
from unrolled.validation import ConfigError, check

DEFAULT_KIND = "regression"
"""The family of a config whose ``task`` names no ``kind`` (the Memformer configs predate the others)."""

SCHEMA_FILE = "schema.json"
"""Where ``unrolled config schema`` writes by default, beside the shipped configs (configs/schema.json)."""


def task_kind(data: Any) -> str:
    """The ``task.kind`` of raw config data (a mapping), :data:`DEFAULT_KIND` when it names none."""
    task = data.get("task") if isinstance(data, Mapping) else None
    if isinstance(task, Mapping) and task.get("kind") is not None:
        return str(task["kind"])
    return DEFAULT_KIND


class ExperimentConfig(ConfigModel):
    """One experiment: a task, the methods to compare, the seeds, and what its family adds.

    Validating data with this class itself returns the subclass of the family that ``task.kind`` names.
    A family whose config has ``methods`` (each with a ``name``) and ``published`` (keyed by method name)
    gets their checks here: distinct names, published numbers only for methods that exist.
    """

    name: Str
    description: Str = ""
    seeds: Annotated[tuple[Int, ...], Field(min_length=1)] = (0, 1, 2, 3, 4)
    dtype: Literal["float32", "float64"] = "float32"
    device: Str = "cpu"
    published_source: Str = ""

    MESSAGES: ClassVar[dict[tuple[str, str], str]] = {
        ("seeds", "too_short"): "needs at least one seed",
        ("methods", "too_short"): "needs at least one method",
    }

    @classmethod
    def resolve_class(cls, data: Any) -> type[ConfigModel]:
        if cls is not ExperimentConfig:
            return cls
        return get_family(task_kind(data)).config_class

    @model_validator(mode="after")
    def _shared_rules(self) -> ExperimentConfig:
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct")
        names = [m.name for m in getattr(self, "methods", ())]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "methods", f"duplicate method names: {', '.join(dup)}")
        for key in getattr(self, "published", None) or {}:
            check(key in names, f"published.{key}", f"no method named {key!r}")
        check(
            self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            f"expected 'cpu' or 'cuda[:N]', got {self.device!r}",
        )
        return self

    @property
    def kind(self) -> str:
        """The family's ``task.kind``."""
        return str(self.task.kind)  # type: ignore[attr-defined]


def parse_config(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate plain config data (e.g. a YAML document) into its family's config."""
    return from_dict(ExperimentConfig, data)


def shipped_configs() -> Path:
    """The folder of the configs that ship inside the package (``unrolled/configs``, package data)."""
    return Path(str(resources.files("unrolled") / "configs"))


def config_dirs() -> list[Path]:
    """Where config names are looked up: the user's ./configs first, then the configs shipped with the
    package (so a name works from any folder after any install: editable, wheel or index)."""
    seen, out = set(), []
    for d in (Path.cwd() / "configs", shipped_configs()):
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def available_configs() -> list[str]:
    """The config names :func:`resolve_config` knows."""
    return sorted({p.stem for d in config_dirs() for p in d.glob("*.yaml")})


def resolve_config(name_or_path: str | Path) -> Path:
    """A config file from a path, or from a name in :func:`config_dirs` (``demo`` -> configs/demo.yaml)."""
    p = Path(name_or_path)
    if p.is_file() or p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p  # a file (or what is meant as one: loading it says it is missing)
    for d in config_dirs():
        for candidate in (d / str(name_or_path), d / f"{name_or_path}.yaml"):
            if candidate.is_file():
                return candidate
    names = ", ".join(available_configs()) or "none found"
    raise ConfigError(f"{name_or_path}: no such config file or config name (known names: {names})")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load and validate an experiment config from YAML, applying ``key=value`` overrides first.

    Args:
        path: a YAML file, or the name of a config in ./configs or shipped with the package (``"demo"``).
        overrides: ``key=value`` strings, as ``--set`` takes them (``methods[0].lr=0.005``).

    Raises:
        ConfigError: naming the file and the key (``configs/x.yaml: task.d: must be >= 1, got 0``).
    """
    path = resolve_config(path)
    data = apply_overrides(load_yaml(path), overrides)
    try:
        return parse_config(data)
    except ConfigError as exc:
        where = f" (after --set {', '.join(overrides)})" if overrides else ""
        raise ConfigError(f"{path}{where}: {exc}", key=exc.key, reason=exc.reason) from None


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text (``config.yaml`` of a run folder)."""
    return dump_yaml(cfg)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every family's config (editors complete and check YAML configs with it)."""
    classes = [f.config_class for f in sorted(all_families(), key=lambda f: f.kind)]
    schema = TypeAdapter(Union[tuple(classes)]).json_schema()  # noqa: UP007 (a runtime tuple of classes)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "unrolled experiment config",
        "description": "One experiment: `task.kind` picks the family (regression when absent). "
        "Generated by `unrolled config schema`; do not edit.",
        **schema,
    }


def schema_text() -> str:
    """:func:`json_schema` as the text ``unrolled config schema`` writes."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
