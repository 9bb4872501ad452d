"""One place that seeds python, numpy and torch."""

from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (all devices) from one integer."""
    from transformers import set_seed

    set_seed(int(seed))
