"""Values a config took from the environment (``${oc.env:NAME}``) are secrets: used, never written.

The config loader registers (:func:`register`) each environment value it resolved; every text file a run
writes through :func:`mmalign.utils.atomic.atomic_write_text` (config snapshot, reports, results),
each metrics line and each ``run.log`` record pass through :func:`redact`, which puts the
``${oc.env:NAME}`` form back in place of the value. Values shorter than :data:`MIN_SECRET_CHARS`
are not searched for (replacing every ``1`` in a log would destroy it); the config snapshot keeps
them unresolved all the same, since it is written from the unresolved config.
"""

from __future__ import annotations

import logging

MIN_SECRET_CHARS = 4

_SECRETS: dict[str, str] = {}  # resolved value -> "${oc.env:NAME}", for this process


def register(name: str, value: str) -> None:
    """Remember that ``value`` came from the environment variable ``name``."""
    if len(value) >= MIN_SECRET_CHARS:
        _SECRETS[value] = f"${{oc.env:{name}}}"


def redact(text: str) -> str:
    """``text`` with every registered environment value replaced by its ``${oc.env:NAME}`` form."""
    for value in sorted(_SECRETS, key=len, reverse=True):  # longest first: one value may contain another
        if value in text:
            text = text.replace(value, _SECRETS[value])
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts environment values from each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg, record.args = redact(record.getMessage()), None
        return True
