"""The config error type and its check, shared by every module that defines part of a config."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key is unknown, of the wrong type, or out of range; the message names the key.

    Attributes:
        key: the dotted key the error is about (relative to the config section that raised it, when raised
            inside a section's validator; the loader prefixes the section's own path), or None.
        reason: the message without the key.
    """

    def __init__(self, message: str, *, key: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason if reason is not None else message

    def __reduce__(self) -> tuple[object, ...]:  # picklable across worker processes, attributes included
        return (_rebuild, (str(self), self.key, self.reason))


def _rebuild(message: str, key: str | None, reason: str) -> ConfigError:
    return ConfigError(message, key=key, reason=reason)


def check(condition: bool, path: str, message: str) -> None:
    """Raise :class:`ConfigError` with ``path: message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{path}: {message}", key=path, reason=message)
