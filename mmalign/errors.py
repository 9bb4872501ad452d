"""User-facing errors.

Anything the user can fix (a config key, a data file, a path) raises :class:`UserError`. The CLI
prints its message as one line on stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; its message is shown as a single line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(UserError):
    """An invalid configuration value, key or file."""


class DataError(UserError):
    """A malformed or unusable data file."""
