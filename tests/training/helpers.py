"""What the kill-and-resume tests of every recipe share: a run killed right after a checkpoint,
a corrupted checkpoint, and a bit-for-bit comparison of weight files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmalign.training import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]


def kill_after_checkpoint(argv: list[str], checkpoints: Path, step: int, timeout: float = 300) -> None:
    """Run ``mmalign *argv`` in a subprocess and SIGKILL it as soon as checkpoint ``step`` is complete."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "mmalign", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    marker = checkpoints / ckpt.checkpoint_name(step) / ckpt.MANIFEST
    deadline = time.time() + timeout
    try:
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, f"no checkpoint at step {step} in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (checkpoints.parent / "DONE").exists(), "the run finished before it was killed"


def corrupt(path: Path) -> None:
    """Flip the last byte of ``path`` (a bad disk block, a truncated copy)."""
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))


def assert_same_weights(a: Path, b: Path) -> None:
    """The safetensors files ``a`` and ``b`` hold the same tensors, bit for bit."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
