import random

import numpy as np
import pytest
import torch

from mmalign.errors import ConfigError
from mmalign.utils.device import resolve_device, resolve_dtype
from mmalign.utils.seed import seed_everything


def test_auto_device_is_available():
    dev = resolve_device("auto")
    assert dev.type in {"cpu", "cuda", "mps"}
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", dev) == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_seed_everything_is_reproducible():
    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_seeded_runs_reproduce_an_indexed_gather_backward_on_several_threads():
    """The backward of ``x[idx]`` accumulates into ``x.grad`` atomically across CPU threads; after
    seed_everything torch's deterministic kernel is used, so repeats are bit-identical."""
    previous, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seed_everything(0)
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, 50, (200_000,), generator=g)
        vals = torch.randn(200_000, generator=g) * torch.logspace(-3, 3, 200_000)
        grads = []
        for _ in range(4):
            x = torch.zeros(50, requires_grad=True)
            (x[idx] * vals).sum().backward()
            grads.append(x.grad)
        assert all(torch.equal(grads[0], grad) for grad in grads[1:])
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)
