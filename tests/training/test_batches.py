"""The one data order: seeded epoch permutations, a pure function of the position."""

from __future__ import annotations

import hashlib

import pytest
import torch

from mmalign.training.batches import batch, epoch_permutation, take


def align_step_prompts(num_prompts: int, per_step: int, step: int, seed: int) -> list[int]:
    """recipes/align.py's ``step_prompts`` before training/ existed (the study's prompt order)."""
    def _seed(*parts) -> int:
        return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)

    out = []
    for pos in range((step - 1) * per_step, step * per_step):
        epoch, i = divmod(pos, num_prompts)
        perm = torch.randperm(num_prompts, generator=torch.Generator().manual_seed(_seed(seed, "epoch", epoch)))
        out.append(int(perm[i]))
    return out


@pytest.mark.parametrize("n,per_step,seed", [(8, 2, 3), (64, 16, 0), (7, 3, 11), (5, 16, 1), (1, 4, 2)])
def test_align_prompt_order_is_bit_identical_to_the_old_one(n, per_step, seed):
    for step in range(1, 3 * n // per_step + 4):
        assert batch(n, per_step, step - 1, seed) == align_step_prompts(n, per_step, step, seed), step


def test_each_epoch_is_a_permutation_and_epochs_differ():
    n = 50
    stream = take(n, 0, 3 * n, seed=4)
    epochs = [stream[i * n:(i + 1) * n] for i in range(3)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[1] == epoch_permutation(n, 4, 1).tolist()


def test_any_slice_is_the_same_slice_of_the_stream():
    """What resume relies on: batch k does not depend on the batches before it."""
    n, seed = 13, 9
    whole = take(n, 0, 100, seed)
    assert [i for k in range(20) for i in batch(n, 5, k, seed)] == whole
    assert take(n, 37, 20, seed) == whole[37:57]
    assert take(n, 0, 100, seed + 1) != whole


def test_an_empty_dataset_is_refused():
    with pytest.raises(ValueError):
        take(0, 0, 1, 0)
