"""The known failure types of loading and I/O, turned into one-line :class:`~mmalign.errors.FileError` errors.

Load sites (model and tokenizer folders, data files, images) wrap their reads in :func:`reading`,
which names the offending file -- inside a model folder, the one file that is bad -- and the config
key that pointed at it. The types mapped (:func:`reason`) are those a user's files or machine cause:
corrupt safetensors, invalid JSON, text that is not UTF-8, nesting too deep to parse, unreadable or
oversized images, missing or unreadable files. Anything else keeps its traceback: it is a bug.

Writes fail for reasons of the machine, not the code (permission denied, a read-only or full disk);
the CLI turns those into one line with :func:`environment_error`, whichever verb hit them.
:func:`check_model_dir` and :func:`check_tokenizer_dir` refuse a folder that cannot be a checkpoint
before a loader reports it as something obscure.
"""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterator
from pathlib import Path

from mmalign.errors import FileError, UserError

#: Files whose presence makes a folder loadable as a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
#: errno values of writes (and reads) that fail because of the machine, never because of the code.
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0].strip() if lines else type(exc).__name__)[:200]


def reason(exc: BaseException) -> str | None:
    """A one-line description of a known loading / I-O failure, or None for any other exception."""
    from PIL import Image, UnidentifiedImageError
    from safetensors import SafetensorError

    if isinstance(exc, SafetensorError):
        return f"corrupt or truncated safetensors file ({_first_line(exc)})"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (invalid byte at offset {exc.start})"
    if isinstance(exc, RecursionError):
        return "nested too deeply to parse"
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large to decode ({_first_line(exc)})"
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return f"file not found{': ' + str(exc.filename) if exc.filename else ''}"
    if isinstance(exc, OSError):
        return _first_line(exc)
    return None


def _bad_file(path: Path, exc: BaseException) -> Path:
    """Inside a folder, the file that fails the way ``exc`` did (else the folder itself)."""
    if not path.is_dir():
        return path
    from safetensors import SafetensorError, safe_open

    if isinstance(exc, SafetensorError):
        for f in sorted(path.glob("*.safetensors")):
            try:
                with safe_open(str(f), framework="pt"):
                    pass
            except SafetensorError:
                return f
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError, RecursionError)):
        for f in sorted(path.glob("*.json")):
            try:
                json.loads(f.read_text(encoding="utf-8"))
            except (ValueError, RecursionError):
                return f
    filename = getattr(exc, "filename", None)
    return Path(filename) if isinstance(exc, OSError) and filename else path


@contextlib.contextmanager
def reading(path: str | Path, key: str | None = None, *, what: str = "",
            broad: bool = False) -> Iterator[None]:
    """Turn a known failure while reading ``path`` into a :class:`FileError` naming the bad file.

    ``what`` (e.g. ``"tokenizer"``) prefixes the problem; ``broad`` maps *every* exception, for
    loaders whose failures on a corrupt file come in arbitrary types (tokenizer libraries raise
    KeyError, ValueError or a bare Exception); the original stays chained for ``--debug``.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # RecursionError included
        machine = environment_error(exc)
        if machine is not None:  # about the file the OS names, which may be one being written
            raise machine from exc
        problem = reason(exc)
        if problem is None:
            if not broad:
                raise
            problem = f"{type(exc).__name__}: {_first_line(exc)}"
        prefix = f"cannot load the {what}: " if what else ""
        raise FileError(str(_bad_file(Path(path), exc)), prefix + problem, key=key) from exc


def environment_error(exc: BaseException) -> FileError | None:
    """A one-line error for an OS error the machine caused (permission, read-only or full disk)."""
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        where = exc.filename or "a file"
        return FileError(str(where), exc.strerror or _first_line(exc))
    return None


def check_model_dir(path: str | Path, key: str) -> None:
    """Refuse a local folder that cannot hold a Hugging Face model: empty, or without config.json."""
    p = Path(path)
    if not p.is_dir():
        return
    try:
        empty = not any(p.iterdir())
    except OSError as exc:
        raise FileError(str(p), reason(exc) or "unreadable folder", key=key) from None
    if empty:
        raise FileError(str(p), "the checkpoint folder is empty", key=key)
    if not (p / "config.json").is_file():
        raise FileError(str(p), "no config.json: not a checkpoint folder (expected one written by save_pretrained)",
                        key=key)


def check_tokenizer_dir(path: str | Path, key: str) -> None:
    """Refuse a local folder that holds no tokenizer files."""
    p = Path(path)
    if p.is_dir() and not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise FileError(str(p), f"no tokenizer files (none of {', '.join(TOKENIZER_FILES)})", key=key)
