"""Content digests of model files: what a cache keyed on "the same model" must compare.

A path says where a model is, not what it is: a directory can be moved (same model, new path) or
trained again in place (new model, same path). :func:`weights_digest` reads the files instead.
Files up to ``full_limit`` bytes are hashed whole; larger ones by their size and 1 MiB at the
head, the middle and the tail (retraining changes every part of a weight file; this keeps the
digest of a 14 GB shard to milliseconds).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_SUFFIXES = (".safetensors", ".bin", ".json", ".gguf", ".onnx", ".data", ".model", ".txt", ".jinja")
FULL_HASH_LIMIT = 256 * 2**20
_CHUNK = 2**20


def _update(h, f: Path, full_limit: int) -> None:
    size = f.stat().st_size
    h.update(f"{f.name}:{size}".encode())
    with f.open("rb") as fh:
        if size <= full_limit:
            h.update(fh.read())
            return
        for pos in (0, size // 2, max(0, size - _CHUNK)):
            fh.seek(pos)
            h.update(fh.read(_CHUNK))


def weights_digest(path: str | Path, *, suffixes: tuple[str, ...] = MODEL_SUFFIXES,
                   full_limit: int = FULL_HASH_LIMIT) -> str:
    """A short sha256 of a model file, or of a directory's model files (top level, by name)."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.glob("*") if f.is_file() and f.suffix in suffixes)
    for f in files:
        _update(h, f, full_limit)
    return h.hexdigest()[:16]
