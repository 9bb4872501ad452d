"""Checkpoints: atomic, verified by their manifest, rotated; RNG capture/restore."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from mmalign.rl import checkpoint as ckpt


def _save(root, step, value, keep=3):
    p = torch.nn.Parameter(torch.full((3,), float(value)))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    return ckpt.save_checkpoint(root, step, tensors=ckpt.trainable_tensors({"policy": [p]}),
                                optimizer=opt.state_dict(), rng=ckpt.capture_rng(), keep=keep,
                                trainer={"data_position": step * 4, "kl_controller": {"value": 0.1}})


def test_save_verify_load_and_rotate(tmp_path):
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, step, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 40]
    found = ckpt.latest_valid(tmp_path)
    assert found.step == 40 and found.trainer()["data_position"] == 160
    p = torch.nn.Parameter(torch.zeros(3))
    ckpt.load_trainable({"policy": [p]}, found.tensors())
    assert torch.allclose(p, torch.full((3,), 40.0) - 0.1 * (1 + 0.01 * 40), atol=1e-3)
    assert found.optimizer()["state"][0]["exp_avg"].shape == (3,)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary directories left behind


def test_corrupt_and_partial_checkpoints_fall_back(tmp_path):
    _save(tmp_path, 10, 1.0)
    good = _save(tmp_path, 20, 2.0)
    bad = _save(tmp_path, 30, 3.0)
    blob = bytearray((bad / "trainable.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (bad / "trainable.safetensors").write_bytes(bytes(blob))
    partial = tmp_path / ckpt.checkpoint_name(40)
    partial.mkdir()
    (partial / "trainable.safetensors").write_bytes(b"half")
    reports: list[str] = []
    found = ckpt.latest_valid(tmp_path, reports.append)
    assert found.path == good
    assert "step-00000040" in reports[0] and "no manifest" in reports[0]
    assert "step-00000030" in reports[1] and "sha256" in reports[1]
    assert ckpt.verify(good) is None


def test_rng_round_trip():
    gen = torch.Generator().manual_seed(5)
    state = ckpt.capture_rng({"sample": gen})
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=gen)))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    ckpt.restore_rng(torch.load(buf, weights_only=True), {"sample": gen})
    again = (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=gen)))
    assert first == again
