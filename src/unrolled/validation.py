"""The config error type and its check, shared by every module that defines part of a config."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key is unknown, of the wrong type, or out of range; the message names the key."""


def check(condition: bool, path: str, message: str) -> None:
    """Raise :class:`ConfigError` with ``path: message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{path}: {message}")
