"""The optional extras of ``unrolled`` and the modules they bring; one clear error when one is missing.

The core install (torch, numpy, pydantic, PyYAML, tqdm) runs the own-model experiments (Memformers, the UT on
in-context regression, the denoisers on Moving MNIST). The rest comes in extras (``pyproject.toml``):

========  =====================================================  ============================================
extra     modules                                                what needs them
========  =====================================================  ============================================
hf        transformers, datasets, accelerate, peft, trl, gguf    pretrained models, text, SFT, audits, GPT-2
video     av, skimage                                            decoding real videos, the TV reference
plot      matplotlib                                             figures (reports say so in their text)
========  =====================================================  ============================================

A command that needs an extra that is not installed stops with :class:`MissingExtraError`, whose one-line
message names the module and the install command; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

EXTRAS: dict[str, str] = {
    "transformers": "hf",
    "datasets": "hf",
    "accelerate": "hf",
    "peft": "hf",
    "trl": "hf",
    "gguf": "hf",
    "av": "video",
    "skimage": "video",
    "matplotlib": "plot",
    "tensorboard": "tensorboard",
}
"""Top-level module -> the extra that installs it."""


class MissingExtraError(ImportError):
    """Something needs a module of an optional extra that is not installed (the message says which)."""


@dataclass(frozen=True)
class Requirement:
    """A module a piece of work needs, and what for (``"text classification"``, ``"the GPT-2 learner"``)."""

    module: str
    purpose: str

    @property
    def extra(self) -> str | None:
        return EXTRAS.get(self.module.split(".")[0])

    def message(self) -> str:
        """``the GPT-2 learner needs 'transformers' (the 'hf' extra): pip install 'unrolled[hf]'``."""
        extra = self.extra
        how = f" (the '{extra}' extra): pip install 'unrolled[{extra}]'" if extra else ": install it"
        return f"{self.purpose} needs {self.module!r}{how}"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found on the path; nothing is imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a half-installed module
        return False


def missing(requirements: list[Requirement]) -> list[Requirement]:
    """The requirements whose module is not installed."""
    return [r for r in requirements if not installed(r.module)]


def require(requirements: list[Requirement]) -> None:
    """Raise :class:`MissingExtraError` if a requirement is not installed; one message names every missing
    module, grouped by purpose and extra (``constrained SFT needs 'trl', 'peft' (the 'hf' extra): …``)."""
    absent = missing(requirements)
    if not absent:
        return
    groups: dict[tuple[str, str | None], list[str]] = {}
    for r in absent:
        groups.setdefault((r.purpose, r.extra), []).append(r.module)
    parts = []
    for (purpose, extra), modules in groups.items():
        names = ", ".join(repr(m) for m in modules)
        how = f" (the '{extra}' extra): pip install 'unrolled[{extra}]'" if extra else ": install it"
        parts.append(f"{purpose} needs {names}{how}")
    raise MissingExtraError("; ".join(parts), name=absent[0].module)


def explain(exc: ModuleNotFoundError, purpose: str) -> MissingExtraError | None:
    """A :class:`MissingExtraError` for an import that failed on an extra's module, else None."""
    name = (exc.name or "").split(".")[0]
    if name not in EXTRAS:
        return None
    return MissingExtraError(Requirement(name, purpose).message(), name=name)
