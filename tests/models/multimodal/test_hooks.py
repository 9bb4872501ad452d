"""A multimodal policy offers the same recipe hooks as a text one (TrainablePolicy)."""

from __future__ import annotations

from mmalign.models.loading import load_policy
from mmalign.models.policy import TrainablePolicy


def test_multimodal_policy_hooks(mm_policy_dir):
    pol = load_policy(mm_policy_dir, device="cpu", dtype="float32")
    assert isinstance(pol, TrainablePolicy) and pol.vocab_size == len(pol.vocabulary())
    assert "<image>" in pol.vocabulary()
    pol.freeze()
    assert pol.trainable_parameters() == [] and not pol.training
