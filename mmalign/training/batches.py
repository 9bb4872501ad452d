"""The order in which every recipe visits its data: an endless stream of seeded epoch permutations.

Epoch ``e`` of ``n`` items is ``torch.randperm(n)`` under a generator seeded from ``(seed, e)``;
the stream is epoch 0, then epoch 1, ... Any slice of it is a pure function of its position, so a
resumed run (or another process) sees exactly the items an uninterrupted run would.
"""

from __future__ import annotations

import hashlib

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed for ``epoch`` of a run seeded ``seed`` (sha256 of both)."""
    digest = hashlib.sha256(repr((seed, "epoch", epoch)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` items in ``epoch``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def take(n: int, start: int, count: int, seed: int) -> list[int]:
    """Items ``start, ..., start + count - 1`` of the stream (indices into the ``n`` items)."""
    if n < 1:
        raise ValueError("cannot order an empty dataset")
    perms: dict[int, torch.Tensor] = {}
    out = []
    for pos in range(start, start + count):
        epoch, i = divmod(pos, n)
        if epoch not in perms:
            perms[epoch] = epoch_permutation(n, seed, epoch)
        out.append(int(perms[epoch][i]))
    return out


def batch(n: int, batch_size: int, index: int, seed: int) -> list[int]:
    """The ``index``-th (0-based) batch of ``batch_size`` consecutive items of the stream."""
    return take(n, index * batch_size, batch_size, seed)
