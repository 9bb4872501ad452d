"""Test-wide setup: no network anywhere (this process and every subprocess), offline hubs,
and tiny models built locally from config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_GUARD_DIR = Path(__file__).parent / "netguard"

# Offline everywhere, and the guard in every Python subprocess the tests start.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["MPLBACKEND"] = "Agg"
# One intra-op thread everywhere (this process and subprocesses): toy models run faster on a small
# shared CPU, and results do not depend on how many threads a reduction was split over.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join([str(_GUARD_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)

sys.path.insert(0, str(_GUARD_DIR))
import sitecustomize as _netguard  # noqa: E402  (installs the guard in this process too)

sys.path.remove(str(_GUARD_DIR))

NetworkBlockedError = _netguard.NetworkBlockedError

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny Llama causal LM (2 layers, width 64, GQA) + BPE tokenizer, saved with save_pretrained."""
    from mmalign.models.toy import DEFAULT_CHAT_TEMPLATE, SAMPLE_TEXT, build_tiny_llama

    out = tmp_path_factory.mktemp("tiny_llama")
    texts = SAMPLE_TEXT * 20
    return build_tiny_llama(out, texts, vocab_size=384, seed=0, chat_template=DEFAULT_CHAT_TEMPLATE)


@pytest.fixture
def run_cli(capsys):
    """Run ``mmalign`` in-process; returns (exit_code, stdout, stderr)."""
    from mmalign.cli.main import main

    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


def _cpu_summary() -> str:
    """The CPU model and the instruction sets that change numerics (int8 kernels differ with VNNI)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"cpu: {os.uname().machine} (no /proc/cpuinfo)"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines() if line.startswith("flags")), set())
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return f"cpu: {model}; {', '.join(wanted) or 'no avx2'}; torch dispatch {torch.backends.cpu.get_cpu_capability()}"


def pytest_report_header(config) -> str:
    """Which CPU the suite ran on, so a failure on one kind of machine can be told from another."""
    return _cpu_summary()


def pytest_terminal_summary(terminalreporter) -> None:
    """The same CPU line at the end of the run, where ``-q`` output (``make test``) still shows it."""
    terminalreporter.write_line(_cpu_summary())
