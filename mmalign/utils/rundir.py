"""Run directories: ``runs/<name>/`` with the resolved config, metrics, a log and checkpoints.

Layout::

    runs/<name>/config.yaml      resolved config snapshot
    runs/<name>/metrics.jsonl    one JSON object per logged step
    runs/<name>/run.log          the run's log
    runs/<name>/checkpoints/     recipe checkpoints
    runs/<name>/DONE             written when the run finished

A finished run is never overwritten without ``overwrite``; an unfinished one needs ``resume``
(continue) or ``overwrite`` (start again).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign.errors import UserError
from mmalign.utils.atomic import atomic_write_text

DONE_MARKER = "DONE"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass
class RunDir:
    """An open run directory; create with :meth:`open`."""

    path: Path
    resumed: bool = False
    logger: logging.Logger = field(repr=False, default=None)  # type: ignore[assignment]

    @classmethod
    def open(cls, output_dir: str | Path, name: str, config_yaml: str, *, overwrite: bool = False,
             resume: bool = False) -> RunDir:
        """Create (or reopen with ``resume``) the run directory ``output_dir/name``."""
        path = Path(output_dir) / name
        resumed = False
        if path.exists() and any(path.iterdir()):
            if overwrite:
                shutil.rmtree(path)
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
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        if resumed:
            previous = (path / "config.yaml").read_text(encoding="utf-8") if (path / "config.yaml").exists() else None
            if previous is not None and previous != config_yaml:
                atomic_write_text(path / "config.resumed.yaml", config_yaml)
        else:
            atomic_write_text(path / "config.yaml", config_yaml)
        run = cls(path=path, resumed=resumed)
        run.logger = _file_logger(path / "run.log")
        run.logger.info("%s run at %s", "resumed" if resumed else "started", path)
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log_metrics(self, step: int, **metrics: Any) -> None:
        """Append one JSON line ``{"step": step, "time": ..., **metrics}``."""
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines past ``after_step`` (used when resuming from a checkpoint)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def finish(self) -> None:
        """Mark the run finished."""
        atomic_write_text(self.path / DONE_MARKER, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        self.logger.info("finished")
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)


def _file_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"mmalign.run.{path.parent.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger
