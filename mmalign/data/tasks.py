"""Bundled datasets shipped inside the package: ``bundled:text/prompts_train`` and friends."""

from __future__ import annotations

from pathlib import Path

from mmalign.errors import DataError

PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).parent / "bundled"
TEXT_SETS = ("prompts_train", "prompts_eval", "sft_train", "sft_eval", "prefs_train", "prefs_eval")


def bundled_names() -> list[str]:
    """Names usable as ``bundled:<name>``, e.g. ``text/prefs_train``."""
    return sorted(f"{p.parent.name}/{p.stem}" for p in BUNDLED_DIR.glob("*/*.jsonl"))


def bundled_path(name: str) -> Path:
    """The file of a bundled dataset (``text/prompts_train``, with or without ``bundled:`` or .jsonl).

    Only the names :func:`bundled_names` lists resolve, so a name cannot reach outside the bundled
    data (``bundled:../../etc/x`` is an unknown name, not a path)."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    key = key.strip("/").removesuffix(".jsonl")
    known = bundled_names()
    if key not in known:
        raise DataError(f"unknown bundled dataset '{name}' (known: {', '.join(known)})")
    return BUNDLED_DIR / f"{key}.jsonl"


def resolve_path(path: str) -> str:
    """``bundled:...`` becomes the packaged file; anything else is returned unchanged."""
    return str(bundled_path(path)) if path.startswith(PREFIX) else path
