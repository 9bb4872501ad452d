"""One place that seeds python, numpy and torch."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (CPU and every CUDA device) from one integer.

    Also switches torch to its deterministic kernels (warning, not failing, where an op has none).
    Without that, a run on several CPU threads is not bit-reproducible: the backward of an indexed
    gather (``index_put_`` with accumulate) adds into shared memory atomically in whatever order
    the threads reach it. The demo's align diverged from step 5 between two runs with 2 threads;
    with deterministic kernels the runs are identical, at no measured cost.

    (Deliberately not ``transformers.set_seed``: importing transformers costs seconds.)
    """
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
