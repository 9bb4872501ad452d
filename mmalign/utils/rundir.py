"""Run directories: ``runs/<name>/`` with the resolved config, metrics, a log and checkpoints.

Layout::

    runs/<name>/config.yaml      resolved config snapshot
    runs/<name>/metrics.jsonl    one JSON object per logged step
    runs/<name>/run.log          the run's log
    runs/<name>/checkpoints/     recipe checkpoints
    runs/<name>/DONE             written when the run finished
    runs/.<name>.lock            the run's lock (holds the writer's pid)

``<name>`` is one path component (see :func:`run_name_problem`). A finished run is never
overwritten without ``overwrite``; an unfinished one needs ``resume`` (continue) or ``overwrite``
(start again). While a process writes a run it holds an OS lock (``flock``) on its lock file, so a
second writer, ``resume`` included, fails with the holder's pid; the OS drops the lock when the
process exits, however it exits.

``overwrite`` never loses a finished run to a failed new one: :meth:`RunDir.open` moves the old
run aside to ``runs/.<name>.replaced-<pid>`` and the new run *commits* (deletes it) only once it
has started cleanly: at :meth:`RunDir.started`, which recipes call once their components are
loaded, or at the first :meth:`~RunDir.log_metrics` or :meth:`~RunDir.finish`. A run that fails
before that is rolled back by :meth:`RunDir.close` (the CLI calls :func:`close_open_runs` on every
exit), and a process killed before that is rolled back by the next ``open`` of the same name.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mmalign.errors import ConfigError, RunLockedError, UserError
from mmalign.utils.atomic import atomic_write_text, clean_stale_temporaries
from mmalign.utils.secrets import RedactingFilter, redact

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

DONE_MARKER = "DONE"
MAX_NAME_BYTES = 200  # leaves room for ".<name>.replaced-<pid>" within the usual 255-byte limit

log = logging.getLogger(__name__)

_OPEN: list[RunDir] = []  # runs this process holds open (locked, perhaps with an uncommitted overwrite)


def run_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a run name (one path component inside ``output_dir``), or None."""
    text = str(name)
    shown = f"'{text}'"
    if not text:
        return "must not be empty"
    if "/" in text or "\\" in text:
        return f"must be a single directory name without '/' or '\\', got {shown}"
    if text.startswith("."):
        return f"must not start with '.' ('.', '..' and hidden names are not run names), got {shown}"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return f"must not contain control characters, got {text!r}"
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        return f"must be at most {MAX_NAME_BYTES} bytes long, got {len(text.encode('utf-8'))}"
    return None


def check_run_flags(*, overwrite: bool, resume: bool) -> None:
    """Reject ``--overwrite`` together with ``--resume``."""
    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other: --resume continues the existing run, "
                        "--overwrite replaces it")


def close_open_runs() -> None:
    """Close every run this process still holds: roll back uncommitted overwrites, release locks."""
    for run in list(reversed(_OPEN)):
        run.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class _Lock:
    """An exclusive ``flock`` on ``path``, which records the holder's pid."""

    def __init__(self, fh: IO[str] | None) -> None:
        self._fh = fh

    @classmethod
    def acquire(cls, path: Path, run_path: Path) -> _Lock:
        if fcntl is None:  # pragma: no cover
            return cls(None)
        try:
            fh = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{path}: cannot create the run's lock file ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            text = fh.read().strip()
            fh.close()
            raise RunLockedError(str(run_path), int(text) if text.isdigit() else None) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        return cls(fh)

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor drops the flock
            self._fh = None


def _recover(root: Path, name: str) -> None:
    """Finish what a killed process left for ``name`` (call with its lock held).

    ``.<name>.deleting-*`` is a replaced run whose deletion was interrupted: delete it.
    ``.<name>.replaced-*`` is a run replaced by an overwrite that never committed: put it back
    (the half-started new run in its place had written no metrics yet and is removed).
    """
    def left(kind: str) -> list[Path]:
        pattern = re.compile(rf"\.{re.escape(name)}\.{kind}-\d+\+*")
        return sorted(p for p in root.glob(glob.escape(f".{name}.{kind}-") + "*")
                      if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink())

    for stale in left("deleting"):
        shutil.rmtree(stale, ignore_errors=True)
    path = root / name
    for stale in left("replaced"):
        if path.is_dir() and not path.is_symlink() and not (path / DONE_MARKER).exists():
            shutil.rmtree(path)
        if not path.exists():
            os.rename(stale, path)
            log.warning("%s: restored the run an interrupted --overwrite had moved aside", path)
        else:
            log.warning("%s: a run an earlier --overwrite moved aside is kept at %s", path, stale)


@dataclass(eq=False)
class RunDir:
    """An open run directory; create with :meth:`open`, end with :meth:`finish` (or :meth:`close`)."""

    path: Path
    resumed: bool = False
    logger: logging.Logger = field(repr=False, default=None)  # type: ignore[assignment]
    _lock: _Lock | None = field(repr=False, default=None)
    _replaced: Path | None = field(repr=False, default=None)  # the old run, until the new one commits

    @classmethod
    def open(cls, output_dir: str | Path, name: str, config_yaml: str, *, overwrite: bool = False,
             resume: bool = False) -> RunDir:
        """Lock and create (or reopen with ``resume``) the run directory ``output_dir/name``.

        With ``overwrite`` an existing run is moved aside, to be deleted when the new run commits
        (:meth:`started`) and put back if it never does. A handle on the same directory that this
        process still holds (left by a call that failed) is closed first; another process's is an
        error naming its pid.
        """
        problem = run_name_problem(name)
        if problem is not None:
            raise ConfigError(f"run.name: {problem}")
        check_run_flags(overwrite=overwrite, resume=resume)
        root = Path(output_dir)
        path = root / name
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{root}: cannot create run.output_dir ({exc.strerror or exc})") from None
        for stale in [r for r in _OPEN if r.path.absolute() == path.absolute()]:
            stale.close()  # left open by an earlier call in this process that failed: it is not writing
        lock = _Lock.acquire(root / f".{name}.lock", path)
        replaced: Path | None = None
        try:
            _recover(root, name)
            resumed = False
            if (path.exists() or path.is_symlink()) and not path.is_dir():
                raise UserError(f"{path}: exists and is not a directory; pick another run.name")
            if path.exists() and any(path.iterdir()):
                if overwrite:
                    if path.is_symlink():
                        raise UserError(f"{path}: is a symbolic link; --overwrite replaces only real run "
                                        "directories (remove the link or pick another run.name)")
                    if not (path / "config.yaml").is_file():
                        raise UserError(f"{path}: not a run directory (no config.yaml); --overwrite refuses to "
                                        "replace it (pick another run.name or run.output_dir)")
                    replaced = root / f".{name}.replaced-{os.getpid()}"
                    while replaced.exists() or replaced.is_symlink():  # one a killed process left
                        replaced = replaced.with_name(replaced.name + "+")
                    os.rename(path, replaced)
                elif resume:
                    if (path / DONE_MARKER).exists():
                        raise UserError(f"{path}: run already finished; use --overwrite to run it again")
                    resumed = True
                elif (path / DONE_MARKER).exists():
                    raise UserError(f"{path}: a finished run exists; pass --overwrite to replace it or pick another run.name")
                else:
                    raise UserError(f"{path}: an unfinished run exists; pass --resume to continue it or --overwrite to restart")
            elif resume:
                raise UserError(f"{path}: nothing to resume (no such run)")
            path.mkdir(exist_ok=True)
            if resumed:
                previous = (path / "config.yaml").read_text(encoding="utf-8") if (path / "config.yaml").exists() else None
                if previous is not None and previous != config_yaml:
                    atomic_write_text(path / "config.resumed.yaml", config_yaml)
            else:
                atomic_write_text(path / "config.yaml", config_yaml)  # first, so it marks a run directory
            (path / "checkpoints").mkdir(exist_ok=True)
            for where in (path, path / "checkpoints"):  # locked: a temporary here is a killed writer's
                for stale in clean_stale_temporaries(where, any_writer=True):
                    log.info("%s: removed %s, left by an interrupted write", path, stale.name)
            run = cls(path=path, resumed=resumed, _lock=lock, _replaced=replaced)
            run.logger = _file_logger(path / "run.log")
        except BaseException:
            if replaced is not None:
                _put_back(path, replaced)
            lock.release()
            raise
        _OPEN.append(run)
        run.logger.info("%s run at %s%s", "resumed" if resumed else "started", path,
                        " (replacing the previous run once this one has started)" if replaced else "")
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def started(self) -> None:
        """The run has started cleanly: delete the run an ``overwrite`` replaced (idempotent)."""
        if self._replaced is None:
            return
        doomed = self._replaced.with_name(f".{self.path.name}.deleting-{os.getpid()}")
        os.rename(self._replaced, doomed)  # one atomic step: from here on the old run is gone
        self._replaced = None
        shutil.rmtree(doomed, ignore_errors=True)
        self.logger.info("deleted the previous run this one replaces")

    def log_metrics(self, step: int, **metrics: Any) -> None:
        """Append one JSON line ``{"step": step, "time": ..., **metrics}`` (commits an overwrite)."""
        self.started()
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(redact(json.dumps(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines past ``after_step`` (used when resuming from a checkpoint)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def finish(self) -> None:
        """Mark the run finished and release it."""
        self.started()
        atomic_write_text(self.path / DONE_MARKER, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        self.logger.info("finished")
        self.close()

    def close(self) -> None:
        """Release the run (idempotent): an overwrite that never committed is rolled back, the
        lock is dropped. A started but unfinished run stays as it is, to be resumed."""
        if self._replaced is not None:
            _close_handlers(self.logger)
            _put_back(self.path, self._replaced)
            self._replaced = None
        _close_handlers(self.logger)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        with contextlib.suppress(ValueError):
            _OPEN.remove(self)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _put_back(path: Path, replaced: Path) -> None:
    """Undo an uncommitted overwrite: the new run's directory goes, the old run returns (if that
    fails it stays at ``replaced``, which the next ``open`` of this name puts back)."""
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.rename(replaced, path)
    except OSError as exc:
        log.warning("%s: could not put the previous run back (%s); it is kept at %s", path, exc, replaced)


def _close_handlers(logger: logging.Logger | None) -> None:
    for handler in list(logger.handlers) if logger is not None else []:
        handler.close()
        logger.removeHandler(handler)


def _file_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"mmalign.run.{path.parent.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _close_handlers(logger)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.addFilter(RedactingFilter())  # no environment secret in run.log
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger
