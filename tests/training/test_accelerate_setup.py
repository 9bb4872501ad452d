"""The kernel's accelerate setup: the engine a launch asks for is the one accelerate runs, or one
line. accelerate itself is replaced by a stand-in reporting the distributed type a machine would
give (FSDP runs only on accelerators, which this machine lacks); the real CPU launch is
tests/recipes/test_align_distributed.py::test_an_fsdp_launch_on_cpu_is_refused_instead_of_running_as_ddp."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import DistributedDataParallelKwargs, DistributedType

from mmalign.errors import UserError
from mmalign.training import accelerate_setup


def _fake_accelerate(monkeypatch, kind: DistributedType, device: str = "cpu") -> list[dict]:
    """Make ``Accelerator(...)`` return a stand-in of distributed type ``kind``; returns the calls."""
    calls: list[dict] = []

    class FakeAccelerator:
        def __init__(self, **kwargs):
            calls.append(kwargs)
            self.distributed_type = kind
            self.device = torch.device(device)

    monkeypatch.setattr(accelerate_setup, "Accelerator", FakeAccelerator)
    for flag in accelerate_setup.ENGINES:
        monkeypatch.delenv(flag, raising=False)
    return calls


def test_a_launch_asking_for_fsdp_that_runs_as_ddp_is_refused(monkeypatch):
    _fake_accelerate(monkeypatch, DistributedType.MULTI_CPU)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UserError, match=r"^the accelerate launch asks for FSDP but accelerate runs MULTI_CPU here "
                                        r"\(FSDP needs GPUs.*docs/scaling.md\)$"):
        accelerate_setup.make_accelerator(cpu=True)


def test_deepspeed_likewise_and_an_honoured_engine_passes(monkeypatch):
    _fake_accelerate(monkeypatch, DistributedType.NO)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "1")
    with pytest.raises(UserError, match="asks for DEEPSPEED but accelerate runs NO"):
        accelerate_setup.make_accelerator(cpu=False)
    _fake_accelerate(monkeypatch, DistributedType.DEEPSPEED)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "1")
    assert accelerate_setup.make_accelerator(cpu=False).distributed_type == DistributedType.DEEPSPEED


def test_fsdp_refuses_the_settings_it_cannot_train_and_names_them(monkeypatch):
    _fake_accelerate(monkeypatch, DistributedType.FSDP)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert accelerate_setup.make_accelerator(cpu=False, not_with_fsdp=[]).distributed_type == DistributedType.FSDP
    with pytest.raises(UserError, match=r"one prepared model's parameters; not with LoRA, quantisation \(use DDP"):
        accelerate_setup.make_accelerator(cpu=False, not_with_fsdp=["LoRA", "quantisation"])
    # the same settings under DDP train
    _fake_accelerate(monkeypatch, DistributedType.MULTI_GPU, "cuda:1")
    assert accelerate_setup.make_accelerator(cpu=False, not_with_fsdp=["LoRA"]).distributed_type == DistributedType.MULTI_GPU


def test_unused_parameters_are_looked_for_only_when_asked(monkeypatch):
    calls = _fake_accelerate(monkeypatch, DistributedType.NO)
    accelerate_setup.make_accelerator(cpu=True)
    accelerate_setup.make_accelerator(cpu=True, find_unused_parameters=True)
    assert calls[0] == {"cpu": True, "kwargs_handlers": []}
    (handler,) = calls[1]["kwargs_handlers"]
    assert isinstance(handler, DistributedDataParallelKwargs) and handler.find_unused_parameters


def test_a_cpu_process_loads_on_cpu_without_an_index_and_a_gpu_keeps_its_own(monkeypatch):
    _fake_accelerate(monkeypatch, DistributedType.MULTI_CPU, "cpu:0")
    assert str(accelerate_setup.run_device(accelerate_setup.make_accelerator(cpu=True))) == "cpu"
    _fake_accelerate(monkeypatch, DistributedType.MULTI_GPU, "cuda:1")
    accelerator = accelerate_setup.make_accelerator(cpu=False)
    assert str(accelerate_setup.run_device(accelerator)) == "cuda:1"
    assert not accelerate_setup.saving_is_collective(accelerator)
    _fake_accelerate(monkeypatch, DistributedType.FSDP, "cuda:0")
    assert accelerate_setup.saving_is_collective(accelerate_setup.make_accelerator(cpu=False))
