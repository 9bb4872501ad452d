"""MMLU-style data: the original CSV tree, JSONL records, or a Hugging Face dataset (cais/mmlu layout).

* CSV tree (github.com/hendrycks/test): ``DIR/{dev,val,test}/<subject>_{dev,val,test}.csv`` (``DIR`` may
  also be the parent of a ``data/`` folder); no header; columns ``question, A, B, C, D, answer``.
* JSONL: one record per line with ``question``, ``choices`` (4 strings), ``answer`` (index 0-3 or a
  letter A-D) and ``subject``. Either a directory holding ``{dev,val,test}.jsonl`` or a single file
  (its records are the test split unless they carry a ``split`` field).
* Hugging Face: a ``save_to_disk`` directory, a directory of parquet files named after their split
  (``test-00000-of-00001.parquet``, ``validation.parquet``, ...), or a hub name (when online), with the
  columns of ``cais/mmlu``: ``question``, ``subject``, ``choices``, ``answer`` (int).

Every problem is a :class:`~mmalign.errors.DataError` naming the file and row.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmalign.errors import DataError

LETTERS = ("A", "B", "C", "D")
SPLITS = ("dev", "val", "test")
_SPLIT_ALIASES = {"dev": "dev", "val": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``where`` is ``file:row`` for error messages."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int
    where: str = ""


@dataclass
class MMLUData:
    """Questions by split (``dev``/``val``/``test``) and subject, in file order."""

    source: str
    layout: str  # "csv" | "jsonl" | "hf"
    splits: dict[str, dict[str, list[Question]]] = field(default_factory=dict)

    def subjects(self, split: str = "test") -> list[str]:
        return sorted(self.splits.get(split, {}))

    def get(self, split: str, subject: str) -> list[Question]:
        return self.splits.get(split, {}).get(subject, [])

    def expected_file(self, split: str, subject: str) -> str:
        """Where ``split`` of ``subject`` is (or would be) read from, for messages."""
        if self.layout == "csv":
            return str(Path(self.source) / split / f"{subject}_{split}.csv")
        if self.layout == "jsonl" and Path(self.source).is_dir():
            return str(Path(self.source) / f"{split}.jsonl")
        return self.source

    def select(self, subjects: Sequence[str] | None, split: str = "test") -> list[str]:
        """The subjects to evaluate: all subjects with ``split`` data, or the named ones (checked)."""
        known = self.subjects(split)
        if not known:
            raise DataError(f"{self.source}: no '{split}' split found")
        if not subjects:
            return known
        for name in subjects:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}"
                raise DataError(f"{self.source}: unknown subject '{name}' in the '{split}' split ({hint})")
        return list(dict.fromkeys(subjects))

    def check_shots(self, subjects: Iterable[str], shots: int) -> None:
        """Every subject needs at least ``shots`` dev examples (lm-eval's first_n sampler)."""
        if shots <= 0:
            return
        for subject in subjects:
            dev = self.get("dev", subject)
            where = self.expected_file("dev", subject)
            if not dev:
                raise DataError(f"{where}: missing dev split for subject '{subject}' (needed for {shots}-shot; use --shots 0)")
            if len(dev) < shots:
                raise DataError(f"{where}: subject '{subject}' has {len(dev)} dev examples, {shots}-shot needs {shots}")


def parse_answer(value: object, where: str) -> int:
    """An answer given as an index 0-3 or a letter A-D (whitespace and case ignored)."""
    if isinstance(value, bool):
        raise DataError(f"{where}: answer must be A-D or 0-3, got {value!r}")
    if isinstance(value, int):
        if 0 <= value < 4:
            return value
        raise DataError(f"{where}: answer must be A-D or 0-3, got {value}")
    text = str(value).strip().upper()
    if text in LETTERS:
        return LETTERS.index(text)
    if text.isdigit() and int(text) < 4 and not isinstance(value, str):
        return int(text)
    raise DataError(f"{where}: answer must be A-D or 0-3, got {str(value)!r}")


def _make(subject: str, question: object, choices: Sequence[object], answer: object, where: str) -> Question:
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: 'question' must be a non-empty string")
    if not isinstance(choices, (list, tuple)) or len(choices) != 4:
        got = len(choices) if isinstance(choices, (list, tuple)) else type(choices).__name__
        raise DataError(f"{where}: 'choices' must be a list of 4 strings, got {got}")
    if not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices):
        raise DataError(f"{where}: every choice must be a string")
    if not subject or not isinstance(subject, str):
        raise DataError(f"{where}: 'subject' must be a non-empty string")
    return Question(subject, question, tuple(str(c) for c in choices), parse_answer(answer, where), where)


# ---------------------------------------------------------------- CSV tree

_CSV_NAME = re.compile(r"^(?P<subject>.+)_(?P<split>dev|val|test)\.csv$")


def _csv_root(path: Path) -> Path | None:
    for root in (path, path / "data"):
        if any(any((root / s).glob("*.csv")) for s in SPLITS if (root / s).is_dir()):
            return root
    return None


def read_csv_file(path: Path, subject: str) -> list[Question]:
    """Read one header-less ``question,A,B,C,D,answer`` file."""
    out: list[Question] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            for row_no, row in enumerate(csv.reader(fh, strict=True), start=1):
                where = f"{path}: row {row_no}"
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != 6:
                    raise DataError(f"{where}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
                out.append(_make(subject, row[0], row[1:5], row[5], where))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    return out


def load_csv_tree(root: Path) -> MMLUData:
    data = MMLUData(source=str(root), layout="csv")
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.csv")):
            m = _CSV_NAME.match(file.name)
            if not m or m.group("split") != split:
                raise DataError(f"{file}: expected a file named <subject>_{split}.csv in {folder}")
            data.splits.setdefault(split, {})[m.group("subject")] = read_csv_file(file, m.group("subject"))
    return data


# ---------------------------------------------------------------- JSONL

def read_jsonl(path: Path, default_split: str | None) -> dict[str, dict[str, list[Question]]]:
    from mmalign.data.readers import read_rows

    out: dict[str, dict[str, list[Question]]] = {}
    for where, rec in read_rows(path, "jsonl"):
        missing = [k for k in ("question", "choices", "answer", "subject") if k not in rec]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
        split = _SPLIT_ALIASES.get(str(rec.get("split", default_split or "test")))
        if split is None:
            raise DataError(f"{where}: unknown split {rec.get('split')!r} (use dev, val or test)")
        q = _make(rec["subject"], rec["question"], rec["choices"], rec["answer"], where)
        out.setdefault(split, {}).setdefault(q.subject, []).append(q)
    return out


def load_jsonl(path: Path) -> MMLUData:
    data = MMLUData(source=str(path), layout="jsonl")
    if path.is_file():
        data.splits = read_jsonl(path, None)
        return data
    for name, split in _SPLIT_ALIASES.items():
        file = path / f"{name}.jsonl"
        if file.is_file():
            for s, by_subject in read_jsonl(file, split).items():
                for subject, qs in by_subject.items():
                    data.splits.setdefault(s, {}).setdefault(subject, []).extend(qs)
    return data


# ---------------------------------------------------------------- Hugging Face

def _records_into(data: MMLUData, split: str, rows: Iterable[dict], where_prefix: str) -> None:
    for i, rec in enumerate(rows, start=1):
        where = f"{where_prefix}: row {i}"
        missing = [k for k in ("question", "choices", "answer", "subject") if k not in rec]
        if missing:
            raise DataError(f"{where}: missing column(s) {', '.join(missing)} (expected the cais/mmlu layout)")
        q = _make(rec["subject"], rec["question"], list(rec["choices"]), rec["answer"], where)
        data.splits.setdefault(split, {}).setdefault(q.subject, []).append(q)


def load_hf(path: str) -> MMLUData:
    """A save_to_disk directory, a directory of parquet files, or a hub dataset name."""
    import datasets

    data = MMLUData(source=path, layout="hf")
    p = Path(path)
    if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file()):
        loaded = datasets.load_from_disk(str(p))
        parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("test", loaded)]
        for name, ds in parts:
            if name in _SPLIT_ALIASES:
                _records_into(data, _SPLIT_ALIASES[name], ds, f"{p}/{name}")
        return data
    if p.is_dir():
        for file in sorted(p.rglob("*.parquet")):
            name = file.name.split("-")[0].split(".")[0]
            split = _SPLIT_ALIASES.get(name) or _SPLIT_ALIASES.get(file.parent.name)
            if split is None:
                continue
            ds = datasets.Dataset.from_parquet(str(file))
            _records_into(data, split, ds, str(file))
        return data
    try:
        loaded = datasets.load_dataset(path, "all")
    except Exception as exc:  # noqa: BLE001 - any hub/offline failure is a user-facing data problem
        raise DataError(f"{path}: not a local MMLU directory/file and could not be loaded from the hub ({type(exc).__name__})") from None
    for name, ds in loaded.items():
        if name in _SPLIT_ALIASES:
            _records_into(data, _SPLIT_ALIASES[name], ds, f"{path}/{name}")
    return data


def load_mmlu(path: str | Path) -> MMLUData:
    """Load MMLU-style data from any supported layout (see the module docstring)."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix in (".jsonl", ".json"):
            return load_jsonl(p)
        if p.suffix == ".parquet":
            return load_hf(str(p.parent))
        raise DataError(f"{p}: unsupported data file (use a CSV tree directory, .jsonl, or a Hugging Face dataset directory)")
    if p.is_dir():
        root = _csv_root(p)
        if root is not None:
            data = load_csv_tree(root)
        elif any((p / f"{s}.jsonl").is_file() for s in _SPLIT_ALIASES):
            data = load_jsonl(p)
        else:
            data = load_hf(str(p))
        if not data.splits:
            raise DataError(f"{p}: no MMLU data found (expected {{dev,val,test}}/<subject>_<split>.csv, {{dev,val,test}}.jsonl or a Hugging Face dataset)")
        return data
    if "/" in str(path) and not str(path).startswith((".", "/", "~")):
        return load_hf(str(path))
    raise DataError(f"{path}: data path not found")


def sample_dir() -> Path:
    """The bundled synthetic sample (five subjects, dev/val/test; see scripts/make_mmlu_sample.py)."""
    return Path(__file__).resolve().parents[2] / "data" / "bundled" / "mmlu_sample"
