"""One place that seeds python, numpy and torch."""

from __future__ import annotations

import random


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (CPU and every CUDA device) from one integer.

    (Deliberately not ``transformers.set_seed``: importing transformers costs seconds.)
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
