"""The one checkpoint format: atomic, verified by its manifest, rotated; RNG capture/restore; the
save/restore pair every recipe calls."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import torch

from mmalign.errors import FileError
from mmalign.training import checkpoint as ckpt
from mmalign.training.schedule import make_scheduler


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


def _trainer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, opt, make_scheduler(opt, "linear", warmup_steps=2, total_steps=10)


def _train(model, opt, sched, gen, steps):
    for _ in range(steps):
        x = torch.randn(4, 3, generator=gen) + torch.rand(1)  # the global RNG matters too
        model(x).pow(2).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def test_save_training_then_restore_training_continues_exactly(tmp_path):
    model, opt, sched = _trainer()
    gen = torch.Generator().manual_seed(1)
    _train(model, opt, sched, gen, 3)
    ckpt.save_training(tmp_path, 3, groups={"model": list(model.parameters())}, optimizer=opt, scheduler=sched,
                       keep=2, trainer={"data_position": 12}, generators={"data": gen})
    _train(model, opt, sched, gen, 4)
    straight = [p.detach().clone() for p in model.parameters()]

    model2, opt2, sched2 = _trainer(seed=5)  # built afresh, with other initial weights
    gen2 = torch.Generator().manual_seed(99)
    torch.rand(7)  # and the global RNG elsewhere
    found = ckpt.latest_valid(tmp_path)
    state = ckpt.restore_training(found, groups={"model": list(model2.parameters())}, optimizer=opt2,
                                  scheduler=sched2, generators={"data": gen2})
    assert found.step == 3 and state["data_position"] == 12 and state["step"] == 3
    assert sched2.last_epoch == 3
    _train(model2, opt2, sched2, gen2, 4)
    for a, b in zip(straight, model2.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_for_another_model_is_a_one_line_file_error(tmp_path):
    model, opt, sched = _trainer()
    ckpt.save_training(tmp_path, 1, groups={"model": list(model.parameters())}, optimizer=opt, scheduler=sched, keep=1)
    other = torch.nn.Linear(3, 4)
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.1)
    with pytest.raises(FileError, match="trainable.safetensors: checkpoint tensor model.0 has shape"):
        ckpt.restore_training(ckpt.latest_valid(tmp_path), groups={"model": list(other.parameters())}, optimizer=opt2,
                              scheduler=make_scheduler(opt2, "constant", warmup_steps=0, total_steps=1))


class _Planted:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_pickle_with_a_matching_manifest_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # an environment that forces unsafe loads
    path = _save(tmp_path, 1, 1.0)
    marker = tmp_path / "code-ran"
    torch.save({"state": _Planted(str(marker))}, path / "optimizer.pt")
    manifest = json.loads((path / ckpt.MANIFEST).read_text())  # someone who also rewrote the manifest
    manifest["files"]["optimizer.pt"] = {"sha256": ckpt._sha256(path / "optimizer.pt"),
                                         "size": (path / "optimizer.pt").stat().st_size}
    (path / ckpt.MANIFEST).write_text(json.dumps(manifest))
    found = ckpt.latest_valid(tmp_path)
    assert found is not None and found.step == 1
    with pytest.raises(FileError, match="optimizer.pt: cannot load the checkpoint's optimizer state"):
        found.optimizer()
    assert not marker.exists()
