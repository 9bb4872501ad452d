"""Read raw rows from JSONL, JSON, CSV, Parquet and Hugging Face datasets.

:func:`read_rows` yields ``(location, row)`` pairs; ``location`` is what an error message should
name: ``file:LINE`` for text files (1-based lines) and ``path row I`` for tables (0-based rows, as
``dataset[I]``). Every problem is a one-line :class:`~mmalign.errors.DataError`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmalign.errors import DataError
from mmalign.utils.io_errors import reading

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

Row = tuple[str, dict[str, Any]]


def detect_format(path: str | Path) -> str:
    """jsonl | json | csv | parquet for a file, hf for a directory or a hub name."""
    p = Path(path)
    if p.is_dir():
        return "hf"
    suffix = p.suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if p.exists():
        raise DataError(f"{path}: unknown data file type '{suffix}' (use .jsonl, .json, .csv, .parquet or set format)")
    return "hf"


def read_rows(path: str | Path, format: str = "auto", *, split: str = "train", name: str | None = None,
              revision: str | None = None) -> Iterator[Row]:
    """Yield ``(location, row_dict)`` for every row of the dataset at ``path``."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt != "hf" and not Path(path).is_file():
        raise DataError(f"{path}: data file not found")
    reader = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}.get(fmt)
    if reader is not None:
        yield from reader(Path(path))
    else:
        yield from _hf(str(path), split=split, name=name, revision=revision)


def _read_text(path: Path) -> str:
    """The file's text; an unreadable file is a one-line error naming it."""
    with reading(path):
        data = path.read_bytes()
    return _decode(path, data)


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (invalid byte 0x{data[exc.start]:02x})") from None


def _jsonl(path: Path) -> Iterator[Row]:
    text = _read_text(path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{path}:{lineno}: JSON nested too deeply to parse") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: each line must be a JSON object, got {type(row).__name__}")
        yield f"{path}:{lineno}", row


def _json(path: Path) -> Iterator[Row]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to parse") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if "data" in data and isinstance(data["data"], list):
            data = data["data"]
        elif len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: a JSON dataset must be a list of objects (or {{\"data\": [...]}})")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path} row {i}: must be a JSON object, got {type(row).__name__}")
        yield f"{path} row {i}", row


def _csv(path: Path) -> Iterator[Row]:
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames
        if not header:
            raise DataError(f"{path}:1: empty CSV file (no header line)")
        for row in reader:
            loc = f"{path}:{reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                got = len([v for v in row.values() if v is not None]) + len(row.get(None) or [])  # type: ignore[call-overload]
                raise DataError(f"{loc}: expected {len(header)} fields, got {got}")
            yield loc, dict(row)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path} row {i}", row


def _hf(path: str, *, split: str, name: str | None, revision: str | None) -> Iterator[Row]:
    ds = load_hf_dataset(path, split=split, name=name, revision=revision)
    for i, row in enumerate(ds):
        yield f"{path} row {i}", dict(row)


def load_hf_dataset(path: str, *, split: str = "train", name: str | None = None, revision: str | None = None):
    """A ``datasets.Dataset``: from a ``save_to_disk`` directory, a folder of data files, or the hub."""
    import datasets

    p = Path(path)
    if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:  # noqa: BLE001 - any failure here is a broken dataset directory
            raise DataError(f"{path}: could not load the saved dataset ({_first_line(exc)})") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split '{split}' (splits: {', '.join(ds)})")
            ds = ds[split]
        return ds
    try:
        return datasets.load_dataset(path, name, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - hub / builder errors come in many types
        where = "local dataset folder" if p.is_dir() else "dataset (local path or hub name)"
        raise DataError(f"{path}: could not load {where} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
