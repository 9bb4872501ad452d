"""Load prompt sets, SFT sets and preference sets from a :class:`DataConfig`.

Each loader reads raw rows (:mod:`mmalign.data.readers`), maps columns through ``cfg.fields``,
splits HH transcripts when the dataset has no prompt column, resolves media paths, and checks
every row: a missing field, an empty prompt or a missing media file is a one-line DataError
naming the file and line (or row). A dataset with no usable rows is an error too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mmalign.config.schemas.data import DataConfig
from mmalign.data.hh import is_hh, split_hh
from mmalign.data.readers import detect_format, read_rows
from mmalign.data.records import PreferenceRecord, PromptRecord, SFTRecord
from mmalign.data.tasks import resolve_path
from mmalign.errors import DataError

MEDIA_KINDS = ("images", "audio", "video")
R = TypeVar("R", bound=PromptRecord)


def _as_config(cfg: DataConfig | str, **kwargs: Any) -> DataConfig:
    return DataConfig(path=cfg, **kwargs) if isinstance(cfg, str) else cfg


def _column(cfg: DataConfig, key: str) -> str:
    return cfg.fields.get(key, key)


def _text(row: dict, cfg: DataConfig, key: str, loc: str, *, required: bool = True) -> str | None:
    col = _column(cfg, key)
    if col not in row or row[col] is None:
        if not required:
            return None
        known = ", ".join(sorted(map(str, row))) or "none"
        mapped = f" (mapped from '{key}')" if col != key else ""
        raise DataError(f"{loc}: missing field '{col}'{mapped}; the row has: {known}")
    value = row[col]
    if not isinstance(value, str):
        raise DataError(f"{loc}: field '{col}' must be text, got {type(value).__name__}")
    return value


def _media_base(cfg: DataConfig, path: str) -> Path | None:
    if cfg.media_root:
        return Path(cfg.media_root)
    p = Path(path)
    if p.is_file():
        return p.parent
    if p.is_dir():
        return p
    return None  # hub dataset: paths are left as they are


def _media_exists(kind: str, path: Path) -> bool:
    """A media file; a video may also be a directory of frame images."""
    return path.is_file() or (kind == "video" and path.is_dir())


def _media(row: dict, cfg: DataConfig, loc: str, base: Path | None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for kind in MEDIA_KINDS:
        value = row.get(_column(cfg, kind))
        if value is None or value == "":
            out[kind] = []
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        resolved = []
        for item in items:
            if isinstance(item, str):
                p = Path(item).expanduser()
                if not p.is_absolute() and base is not None:
                    p = base / p
                if cfg.check_media and base is not None and not _media_exists(kind, p):
                    what = "file or frame directory" if kind == "video" else "file"
                    raise DataError(f"{loc}: {kind} {what} not found: {item} (looked at {p})")
                resolved.append(str(p))
            else:
                resolved.append(item)  # e.g. a PIL image or audio array from an HF dataset
        out[kind] = resolved
    return out


def _meta(row: dict, cfg: DataConfig, used: tuple[str, ...]) -> dict[str, Any]:
    skip = {_column(cfg, k) for k in (*used, *MEDIA_KINDS)}
    return {k: v for k, v in row.items() if k not in skip}


def _load(cfg: DataConfig, make: Callable[[str, dict, Path | None], R], what: str) -> list[R]:
    path = resolve_path(cfg.path)
    base = _media_base(cfg, path)
    records: list[R] = []
    rows: Iterator[tuple[str, dict]] = read_rows(path, cfg.format, split=cfg.split, name=cfg.name,
                                                 revision=cfg.revision)
    for i, (loc, row) in enumerate(rows):
        if i < cfg.skip_rows:
            continue
        records.append(make(loc, row, base))
        if cfg.max_rows is not None and len(records) >= cfg.max_rows:
            break
    if not records:
        after = f" after skipping {cfg.skip_rows} rows (skip_rows)" if cfg.skip_rows else ""
        raise DataError(f"{path}: no usable rows for a {what} dataset{after}")
    return records


def _hh_split(cfg: DataConfig, row: dict, key: str, loc: str) -> tuple[str, str] | None:
    """Split ``row[key]`` as an HH transcript if the dataset has no prompt column."""
    if cfg.dialogue == "none" or _column(cfg, "prompt") in row:
        return None
    text = _text(row, cfg, key, loc, required=False)
    if text is None:
        return None
    if cfg.dialogue == "auto" and not is_hh(text):
        return None
    return split_hh(text, loc)


def _check_nonempty(loc: str, **texts: str) -> None:
    for name, text in texts.items():
        if not text.strip():
            raise DataError(f"{loc}: empty {name}")


def load_prompts(cfg: DataConfig | str, **kwargs: Any) -> list[PromptRecord]:
    """Prompts (the ``prompt`` column, or the prompt part of an HH ``chosen``/``response`` transcript)."""
    cfg = _as_config(cfg, **kwargs)

    def make(loc: str, row: dict, base: Path | None) -> PromptRecord:
        split = None
        for key in ("chosen", "response"):
            split = split or _hh_split(cfg, row, key, loc)
        if split is not None:
            prompt = split[0]
        else:
            prompt = _text(row, cfg, "prompt", loc)
            if cfg.dialogue == "hh":
                prompt = split_hh(prompt, loc)[0]
        _check_nonempty(loc, prompt=prompt)
        return PromptRecord(prompt=prompt, **_media(row, cfg, loc, base),
                            meta=_meta(row, cfg, ("prompt", "chosen", "rejected", "response")), source=loc)

    return _load(cfg, make, "prompt")


def load_sft(cfg: DataConfig | str, **kwargs: Any) -> list[SFTRecord]:
    """(prompt, response) demonstrations; an HH transcript in ``response`` is split if there is no prompt."""
    cfg = _as_config(cfg, **kwargs)

    def make(loc: str, row: dict, base: Path | None) -> SFTRecord:
        split = _hh_split(cfg, row, "response", loc)
        if split is not None:
            prompt, response = split
        else:
            prompt = _text(row, cfg, "prompt", loc)
            response = _text(row, cfg, "response", loc)
        _check_nonempty(loc, prompt=prompt, response=response)
        return SFTRecord(prompt=prompt, response=response, **_media(row, cfg, loc, base),
                         meta=_meta(row, cfg, ("prompt", "response")), source=loc)

    return _load(cfg, make, "SFT")


def load_preferences(cfg: DataConfig | str, **kwargs: Any) -> list[PreferenceRecord]:
    """(prompt, chosen, rejected) pairs; HH transcripts (as in Anthropic hh-rlhf) are split."""
    cfg = _as_config(cfg, **kwargs)

    def make(loc: str, row: dict, base: Path | None) -> PreferenceRecord:
        split_c = _hh_split(cfg, row, "chosen", loc)
        if split_c is not None:
            prompt, chosen = split_c
            rejected_text = _text(row, cfg, "rejected", loc)
            prompt_r, rejected = split_hh(rejected_text, loc)
            if prompt_r != prompt:
                raise DataError(f"{loc}: the chosen and rejected dialogues have different prompts")
        else:
            prompt = _text(row, cfg, "prompt", loc)
            chosen = _text(row, cfg, "chosen", loc)
            rejected = _text(row, cfg, "rejected", loc)
        _check_nonempty(loc, prompt=prompt, chosen=chosen, rejected=rejected)
        return PreferenceRecord(prompt=prompt, chosen=chosen, rejected=rejected, **_media(row, cfg, loc, base),
                                meta=_meta(row, cfg, ("prompt", "chosen", "rejected")), source=loc)

    return _load(cfg, make, "preference")


__all__ = ["load_prompts", "load_sft", "load_preferences", "detect_format"]
