"""A GGUF file as a source of Hugging Face weights: de-quantise it with transformers (which reads
GGUF through the ``gguf`` package) into a plain float model, or convert it once into a
``save_pretrained`` directory.

transformers de-quantises every GGUF tensor (Q4_0 / Q4_1 / Q8_0 / K-quants / F16 ...) to float on
load and records a ``quantization_config`` naming GGUF; the weights are ordinary float tensors
afterwards. :func:`load_gguf_model` rebuilds the model from the config without that entry so it
trains, saves and exports like any checkpoint. Architectures are those transformers' GGUF reader
supports (llama, mistral, qwen2, ...). No network: the tokenizer comes from the file too.

Command line (what ``docs/real_models.md`` shows)::

    python -m mmalign.models.gguf_source convert FILE.gguf DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mmalign.errors import UserError

#: Written into a converted directory: which GGUF it came from (name, size, mtime).
STAMP_FILE = "mmalign_gguf_source.json"
CONVERTER_VERSION = 1


def is_gguf_file(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix.lower() == ".gguf" and p.is_file()


def source_stamp(gguf: Path) -> dict[str, Any]:
    """What identifies a conversion: the GGUF's name, size and mtime, and the converter's version."""
    stat = gguf.stat()
    return {"gguf": gguf.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "converter": CONVERTER_VERSION}


def is_converted(directory: str | Path, gguf: Path) -> bool:
    """True if ``directory`` holds a finished conversion of ``gguf`` (same name, size and mtime)."""
    stamp = Path(directory) / STAMP_FILE
    try:
        return json.loads(stamp.read_text(encoding="utf-8")) == source_stamp(gguf)
    except (OSError, ValueError):
        return False


def _check_file(gguf: Path, key: str) -> None:
    if not gguf.is_file():
        raise UserError(f"{key}: GGUF file not found: {gguf}")
    with open(gguf, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UserError(f"{key}: {gguf} is not a GGUF file (no GGUF magic)")


def load_gguf_model(gguf: str | Path, *, dtype: Any = None, key: str = "model.path"):
    """The GGUF's model de-quantised to plain float weights (no ``quantization_config``)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mmalign.utils.io_errors import reading

    gguf = Path(gguf)
    _check_file(gguf, key)
    dtype = dtype or torch.float32
    with reading(gguf, key, what="GGUF model", broad=True):
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise UserError(f"{key}: {gguf}: the GGUF's tensors do not fit its architecture "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    return model


def load_gguf_tokenizer(gguf: str | Path, *, key: str = "model.path"):
    """The tokenizer stored in the GGUF file (vocabulary, merges, special tokens, chat template)."""
    from transformers import AutoTokenizer

    from mmalign.utils.io_errors import reading

    gguf = Path(gguf)
    _check_file(gguf, key)
    with reading(gguf, key, what="GGUF tokenizer", broad=True):
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def convert(gguf: str | Path, out: str | Path, *, force: bool = False, key: str = "gguf") -> Path:
    """Write ``gguf`` as a Hugging Face directory at ``out`` (float32 safetensors + tokenizer).

    A finished conversion of the same file is kept unless ``force``. The files are written to a
    private sibling directory and renamed into place, so an interrupted conversion leaves nothing
    half-done and two processes converting at once both end with the same finished directory.
    """
    gguf, out = Path(gguf), Path(out)
    _check_file(gguf, key)
    if not force and is_converted(out, gguf):
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / STAMP_FILE).is_file())):
        raise UserError(f"{out}: exists and is not a conversion of a GGUF file; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.converting-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = load_gguf_model(gguf, key=key)
        tokenizer = load_gguf_tokenizer(gguf, key=key)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / STAMP_FILE).write_text(json.dumps(source_stamp(gguf), indent=2) + "\n", encoding="utf-8")
        if not force and is_converted(out, gguf):  # another process finished first
            return out
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        try:
            tmp.rename(out)
        except OSError:
            if not is_converted(out, gguf):  # not a concurrent conversion winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmalign.models.gguf_source",
                                     description="Convert a GGUF file into a Hugging Face directory (offline).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="write DIR (kept if already converted from the same file)")
    c.add_argument("gguf")
    c.add_argument("dir")
    c.add_argument("--force", action="store_true", help="convert again even if DIR is up to date")
    args = parser.parse_args(argv)
    return print_or_fail(lambda: convert(args.gguf, args.dir, force=args.force))


def print_or_fail(action) -> int:
    """Print ``action()``'s result and return 0, or its UserError as one line and return 2."""
    try:
        print(action())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
