"""``make_rollout`` with the exact-KL estimator reuses the sampler's distributions instead of a
second policy forward; the rollout it builds must be the one the forward pass gives."""

from __future__ import annotations

import pytest
import torch

from mmalign.models.loading import load_policy
from mmalign.rl.step import UpdateSettings, log_distributions, make_rollout

PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "The quick brown", "Best-of-N"]


@pytest.fixture(scope="module")
def policies(tiny_llama_dir):
    policy = load_policy(tiny_llama_dir, device="cpu", dtype="float32")
    reference = policy.reference()
    with torch.no_grad():  # move the policy off the reference so the KL is not zero
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return policy, reference


def test_kept_distributions_give_the_rollout_of_a_fresh_forward(policies):
    policy, reference = policies
    samples = policy.sample(PROMPTS, n=4, max_new_tokens=8, temperature=0.8, stop=["e"],
                            generator=torch.Generator().manual_seed(0), keep_distributions=True)
    scores = torch.rand(samples.response_ids.shape[0], generator=torch.Generator().manual_seed(1))
    s = UpdateSettings(n=4, kl_estimator="full", temperature=0.8)
    reused = make_rollout(policy, reference, samples, scores, s, beta=0.3, sampler_is_policy=True)
    samples.distributions = None
    fresh = make_rollout(policy, reference, samples, scores, s, beta=0.3, sampler_is_policy=True)
    assert fresh.kl.abs().sum() > 0.1
    for name in ("old_logp", "ref_logp", "kl", "advantages"):
        assert torch.allclose(getattr(reused, name), getattr(fresh, name), atol=1e-4), name


def test_kept_distributions_are_what_the_kl_reads(policies):
    """The reuse is real: kept distributions equal to the reference's give zero KL, which a second
    policy forward (the moved policy) would not."""
    policy, reference = policies
    samples = policy.sample(PROMPTS, n=4, max_new_tokens=8, generator=torch.Generator().manual_seed(2),
                            keep_distributions=True)
    samples.distributions = log_distributions(reference, samples)
    scores = torch.zeros(samples.response_ids.shape[0])
    s = UpdateSettings(n=4, kl_estimator="full")
    assert make_rollout(policy, reference, samples, scores, s, beta=0.3, sampler_is_policy=True).kl.abs().max() < 1e-5
    fresh = make_rollout(policy, reference, samples, scores, s, beta=0.3, sampler_is_policy=False)
    assert fresh.kl.abs().sum() > 0.1  # not reused when the sampler is not the policy


def _one_update(policies, max_grad_norm: float) -> list[torch.Tensor]:
    """The policy's weights after one update with ``max_grad_norm`` (the policy is restored after)."""
    from mmalign.rl.step import update

    policy, reference = policies
    params = list(policy.trainable_parameters())
    before = [p.detach().clone() for p in params]
    samples = policy.sample(PROMPTS, n=4, max_new_tokens=8, generator=torch.Generator().manual_seed(3))
    scores = 100 * torch.rand(samples.response_ids.shape[0], generator=torch.Generator().manual_seed(4))
    s = UpdateSettings(n=4, max_grad_norm=max_grad_norm)
    rollout = make_rollout(policy, reference, samples, scores, s, beta=0.1, sampler_is_policy=False)
    stats = update(policy, rollout, s, beta=0.1, optimizer=torch.optim.SGD(params, lr=1e-3), params=params,
                   generator=torch.Generator().manual_seed(5))
    after = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    assert stats["grad_norm"] > 1.0  # large rewards: a norm of 1 would clip
    return after


def test_max_grad_norm_zero_turns_clipping_off(policies):
    unclipped, off, clipped = (_one_update(policies, m) for m in (1e12, 0.0, 1.0))
    assert all(torch.equal(a, b) for a, b in zip(unclipped, off))
    assert not all(torch.allclose(a, b) for a, b in zip(unclipped, clipped))
