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
