"""Atomic writes: write to a temporary sibling, fsync, then rename, so readers never see half a file.

A temporary is named ``.<name>.pid<PID>.<random>.tmp``. One a killed process left behind is removed
by the next atomic write to the same place (:func:`clean_stale_temporaries`, for temporaries whose
process is gone), and by :meth:`mmalign.utils.rundir.RunDir.open` for everything in a run directory
it has locked.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmalign.utils.secrets import redact

_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?:pid(?P<pid>\d+)\.)?[^.]+\.tmp$")


def _prefix(path: Path) -> str:
    return f".{path.name}.pid{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process (or no way to tell): leave it
    return True


def clean_stale_temporaries(directory: str | Path, name: str | None = None, *, any_writer: bool = False) -> list[Path]:
    """Remove the temporaries (of ``name``, or of every name) that killed writers left in ``directory``.

    A temporary counts as stale when the pid in its name is no running process; with
    ``any_writer`` (the caller holds the directory's lock, so nobody else writes there) every
    temporary does, those of older versions without a pid included. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        pid = m["pid"]
        if not any_writer and (pid is None or int(pid) == os.getpid() or _alive(int(pid))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (environment secrets redacted: :mod:`mmalign.utils.secrets`)."""
    atomic_write_bytes(path, redact(text).encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block finishes.

    On any exception the temporary directory is removed and ``path`` is left untouched; one that a
    killed process left for the same ``path`` is removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
