"""Hugging Face hub datasets (``imdb``, ``nyu-mll/glue`` mnli, ...) through ``datasets.load_dataset``.

``datasets`` is an optional extra (``pip install 'unrolled[hf]'``), imported inside the functions. Loading
never hangs on a machine without internet: with ``HF_HUB_OFFLINE=1`` (read from the environment at call
time, not only when ``datasets`` was imported) the hub is never contacted and only the local cache is used;
without it, a TCP connection to the hub endpoint is tried first (``timeout`` seconds) and, when it fails,
the cache is used as if offline. A dataset that is neither cached nor reachable is a
:class:`DataNotFoundError` that names it and says how to make it available.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from unrolled.carriers import DataNotFoundError
from unrolled.tasks.text.files import TextDataError

__all__ = ["HubColumns", "hub_columns", "hub_offline", "load_hub"]

_TRUE = {"1", "ON", "YES", "TRUE"}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``) is set true now."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().upper() in _TRUE for name in names)


def _unreachable(endpoint: str, timeout: float) -> str | None:
    """None if a TCP connection to the hub endpoint opens within ``timeout`` s, else why not.

    Behind a proxy (``HTTPS_PROXY`` / ``ALL_PROXY`` set) a direct connection says nothing: None.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    url = urlsplit(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} is unreachable: {exc}"


@contextlib.contextmanager
def _offline_mode(offline: bool) -> Iterator[None]:
    """Make ``datasets`` and ``huggingface_hub`` offline for the block (they read the flag at import)."""
    if not offline:
        yield
        return
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # ConnectionError, FileNotFoundError, HfHubHTTPError, ...
    with contextlib.suppress(ImportError):
        import httpx

        errors.append(httpx.HTTPError)
    with contextlib.suppress(ImportError):
        import requests

        errors.append(requests.RequestException)
    return tuple(errors)


def load_hub(
    name: str,
    config: str | None = None,
    split: str = "train",
    *,
    cache_dir: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """One split of a hub dataset as a ``datasets.Dataset``.

    Args:
        name: the dataset id, e.g. ``"imdb"`` or ``"nyu-mll/glue"``.
        config: its configuration, e.g. ``"mnli"``, or None.
        split: the hub's split name, e.g. ``"train"``, ``"validation_matched"``.
        cache_dir: the ``datasets`` cache folder (default: ``HF_DATASETS_CACHE``).
        timeout: seconds to wait for a connection to the hub before falling back to the cache.

    Raises:
        ImportError: ``datasets`` is not installed (names the ``hf`` extra).
        DataNotFoundError: neither cached nor reachable (offline, no network), or not on the hub.
        TextDataError: the split or configuration does not exist (the message lists what does).
    """
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            f"loading the hub dataset {name!r} needs the 'datasets' package: pip install 'unrolled[hf]'"
        ) from exc
    import huggingface_hub.constants as hub_constants

    label = f"{name!r}" + (f" (config {config!r})" if config else "") + f", split {split!r}"
    offline = hub_offline() or bool(datasets.config.HF_HUB_OFFLINE)
    why = "HF_HUB_OFFLINE is set" if offline else _unreachable(hub_constants.ENDPOINT, timeout)
    offline = offline or why is not None
    try:
        with _offline_mode(offline):
            return datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except _network_errors() as exc:
        cache = cache_dir or datasets.config.HF_DATASETS_CACHE
        if not offline and isinstance(exc, datasets.exceptions.DatasetNotFoundError):
            reason = f"not found on the hub (or gated: log in with `hf auth login`): {exc}"
        else:
            reason = f"not in the local cache ({cache}) and the hub cannot be reached ({why or exc})"
        raise DataNotFoundError(
            f"hub dataset {label}: {reason}. To make it available: run once with internet access (it is then "
            f"cached) and set HF_HUB_OFFLINE=1 to use the cache offline; or save the data to a local file and "
            f"use `source: path/to/file.jsonl` (.csv, .tsv, .json and .parquet work too)"
        ) from exc
    except ValueError as exc:  # an unknown split or configuration
        raise TextDataError(f"hub dataset {label}", str(exc)) from exc


@dataclass(frozen=True)
class HubColumns:
    """The columns of a hub split: texts ``[N]``, second texts ``[N]`` or None, raw labels ``[N]``, and
    the class names when the label column is a ``ClassLabel`` (labels are then class ids), else None."""

    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    labels: tuple[str | int, ...]
    label_names: tuple[str, ...] | None


def hub_columns(
    dataset: Any, source: str, text_column: str, label_column: str, text_pair_column: str | None = None
) -> HubColumns:
    """Take the text, pair and label columns of a ``datasets.Dataset``.

    Args:
        dataset: a ``datasets.Dataset`` (one split).
        source: how to name it in errors, e.g. ``"imdb[train]"``.

    Raises:
        TextDataError: a missing column (lists the columns present), an empty text or label (names the row).
    """
    present = list(dataset.column_names)
    wanted = [text_column, *([text_pair_column] if text_pair_column else []), label_column]
    for column in wanted:
        if column not in present:
            raise TextDataError(source, f"no column {column!r}; the columns are {present}", column=column)
    columns = {}
    for column in wanted[:-1]:
        values = dataset[column]
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise TextDataError(source, f"the text is empty or not text: {value!r}", f"row {i}", column)
        columns[column] = tuple(values)
    labels = []
    for i, value in enumerate(dataset[label_column]):
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            raise TextDataError(
                source, f"a label must be a string or an integer, got {value!r}", f"row {i}", label_column
            )
        labels.append(value.strip() if isinstance(value, str) else value)
    feature = dataset.features.get(label_column) if hasattr(dataset, "features") else None
    names = getattr(feature, "names", None)
    return HubColumns(
        columns[text_column],
        columns[text_pair_column] if text_pair_column else None,
        tuple(labels),
        tuple(str(n) for n in names) if names else None,
    )
