"""Prefix-shared scoring: each distinct prompt is forwarded once and its KV cache reused by its
rows; log-probs and gradients must equal the one-pass-per-row path."""

from __future__ import annotations

import pytest
import torch

from mmalign.models import text as text_module
from mmalign.models.loading import load_policy
from mmalign.models.policy import SequenceBatch, as_prompt

PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "The quick brown", "Best-of-N", "a"]
N = 4


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32")


def _batch(policy, *, n: int = N, max_len: int = 9, seed: int = 0, shuffle: bool = True) -> SequenceBatch:
    """``n`` rows per prompt: ragged left-padded prompts, ragged right-padded random responses
    (one of length 1), rows in a shuffled order as an update minibatch sees them."""
    g = torch.Generator().manual_seed(seed)
    prompt_ids = policy.encode_prompts(PROMPTS)
    assert len({len(p) for p in prompt_ids}) > 1
    rows_p, rows_r, index = [], [], []
    for i, p in enumerate(prompt_ids):
        for j in range(n):
            length = 1 if (i, j) == (1, 0) else int(torch.randint(1, max_len + 1, (1,), generator=g))
            rows_p.append(p)
            rows_r.append(torch.randint(3, 300, (length,), generator=g).tolist())
            index.append(i)
    p_ids, p_mask = policy._left_pad(rows_p)
    r_ids, r_mask = policy._right_pad(rows_r)
    batch = SequenceBatch(prompt_ids=p_ids, prompt_mask=p_mask, response_ids=r_ids, response_mask=r_mask,
                          prompt_index=torch.tensor(index), prompts=[as_prompt(p) for p in PROMPTS])
    if shuffle:
        order = torch.randperm(len(index), generator=g)
        batch = SequenceBatch(prompt_ids=p_ids[order], prompt_mask=p_mask[order], response_ids=r_ids[order],
                              response_mask=r_mask[order], prompt_index=batch.prompt_index[order],
                              prompts=batch.prompts)
    return batch


def _gradients(policy, loss_of) -> list[list[torch.Tensor]]:
    """Parameter gradients of ``loss_of(shared)`` for the per-row path (False), then the shared one."""
    params = [p for p in policy.model.parameters() if p.requires_grad]
    policy.model.train()
    try:
        grads = []
        for shared in (False, True):
            policy.model.zero_grad(set_to_none=True)
            loss_of(shared).backward()
            grads.append([p.grad.clone() for p in params])
    finally:
        policy.model.zero_grad(set_to_none=True)
        policy.model.eval()
    return grads


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_scores_equal_full_path(policy, temperature):
    batch = _batch(policy)
    assert policy._prefix_groups(batch) is not None  # the shared path is really taken
    with torch.no_grad():
        full = policy.score(batch, temperature=temperature, shared_prefix=False)
        shared = policy.score(batch, temperature=temperature)
    assert shared.shape == full.shape == batch.response_ids.shape
    assert torch.allclose(shared, full, atol=1e-5, rtol=0)
    assert (shared[~batch.response_mask.bool()] == 0).all()
    assert (shared[batch.response_mask.bool()] < 0).all()


def test_logits_equal_full_path(policy):
    """``logits`` (what the exact-KL trainer and distillation read) shares prompts the same way."""
    batch = _batch(policy, seed=3)
    with torch.no_grad():
        full = policy.logits(batch, shared_prefix=False)
        shared = policy.logits(batch)
    assert shared.shape == full.shape == (*batch.response_ids.shape, policy.vocab_size)
    alive = batch.response_mask.bool()
    assert torch.allclose(shared[alive], full[alive], atol=1e-4, rtol=0)


def test_logits_gradients_equal_full_path(policy):
    batch = _batch(policy, seed=4)
    weights = torch.randn((*batch.response_ids.shape, policy.vocab_size), generator=torch.Generator().manual_seed(5))
    weights = weights * batch.response_mask[..., None]
    grads = _gradients(policy, lambda shared: (policy.logits(batch, shared_prefix=shared).log_softmax(-1) * weights).sum())
    for g_full, g_shared in zip(*grads):
        assert (g_shared - g_full).abs().max() <= 1e-5 * g_full.abs().max().clamp_min(1e-12)


def test_module_flag_forces_full_path(policy, monkeypatch):
    batch = _batch(policy)
    calls = []
    monkeypatch.setattr(policy, "_shared_prefix_logits", lambda *a: calls.append(a) or None)
    monkeypatch.setattr(text_module, "SHARED_PREFIX_SCORING", False)
    with torch.no_grad():
        policy.score(batch)
    assert not calls


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_gradients_equal_full_path(policy, temperature):
    batch = _batch(policy, seed=1)
    weights = torch.randn(batch.response_ids.shape, generator=torch.Generator().manual_seed(2))
    grads = _gradients(policy, lambda shared: (policy.score(batch, temperature=temperature, shared_prefix=shared)
                                               * weights).sum())
    for g_full, g_shared in zip(*grads):
        scale = g_full.abs().max().clamp_min(1e-12)
        assert (g_shared - g_full).abs().max() <= 1e-5 * scale


def test_single_token_responses(policy):
    batch = _batch(policy, max_len=1)
    assert batch.response_ids.shape[1] == 1
    with torch.no_grad():
        assert torch.allclose(policy.score(batch), policy.score(batch, shared_prefix=False), atol=1e-5, rtol=0)


def test_sampled_rows_match_sampler_logprobs(policy):
    s = policy.sample(PROMPTS[:3], n=N, max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    assert policy._prefix_groups(s) is not None
    with torch.no_grad():
        assert torch.allclose(policy.score(s), s.logprobs, atol=1e-4)


def test_falls_back_without_sharing(policy):
    distinct = _batch(policy, n=1)
    assert policy._prefix_groups(distinct) is None
    batch = _batch(policy, shuffle=False)
    # rows claiming one prompt but holding different prompt tokens: not shared
    bad = SequenceBatch(prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask,
                        response_ids=batch.response_ids, response_mask=batch.response_mask,
                        prompt_index=torch.zeros_like(batch.prompt_index), prompts=batch.prompts)
    assert policy._prefix_groups(bad) is None
    with torch.no_grad():
        assert torch.allclose(policy.score(bad), policy.score(batch, shared_prefix=False), atol=1e-5, rtol=0)
