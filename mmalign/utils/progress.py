"""Progress bars that the CLI's ``--quiet`` turns off everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar and status line."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, **kwargs) -> tqdm:
    """A tqdm bar (disabled under --quiet); use on every loop that can take more than seconds."""
    return tqdm(iterable, desc=desc, total=total, disable=_QUIET, dynamic_ncols=True, leave=False, **kwargs)


def echo(message: str) -> None:
    """Print a status line unless quiet."""
    if not _QUIET:
        print(message, flush=True)
