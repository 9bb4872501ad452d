"""Shared-work continuation scoring (models/continuations.py) on the HF adapter: the prefix cache
and shared inputs change no number, the greedy flag is the argmax, and a runtime whose cache is
wrong is caught by the one-time check."""

from __future__ import annotations

import pytest
import torch

from mmalign.errors import UserError
from mmalign.models.continuations import MIN_PREFIX, PrefixCheck, prefix_groups, score_continuations
from mmalign.models.hf_prefix import HFPrefixRuntime
from mmalign.models.loading import load_policy
from mmalign.models.policy import TokenPrompt

HEAD = "The following are multiple choice questions (with answers) about astronomy.\n\n"


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32")


def _rows(policy):
    """MMLU-shaped rows: four one-token choices per question after a shared head, plus rows that
    share nothing (a short context, another text) and multi-token continuations."""
    contexts, conts = [], []
    for q in ("What is a star?", "Which planet is largest?", "How far is the moon?"):
        ctx = policy.tokenize(f"{HEAD}{q}\nAnswer:")
        for choice in (40, 41, 42, 43):
            contexts.append(ctx)
            conts.append([choice])
    contexts += [policy.tokenize("Hi"), policy.tokenize("Once upon a time there was"), policy.tokenize(HEAD)]
    conts += [policy.tokenize(" there", add_special_tokens=False), policy.tokenize(" a dragon", add_special_tokens=False),
              policy.tokenize("Question: why?", add_special_tokens=False)]
    return contexts, conts


def test_prefix_groups_share_the_longest_common_head():
    a = tuple(range(20))
    inputs = [a + (50,), a[:15] + (60, 61), a + (70, 71, 72), (9,) * 12, tuple(range(5))]
    need = [1, 1, 3, 1, 1]
    groups, plain = prefix_groups(inputs, need)
    # the common prefix of the first three is 15 tokens; every row scores only after it
    assert groups == [([0, 1, 2], 15)] and plain == [3, 4]
    # a row that scores positions inside the common part caps the prefix before them
    assert prefix_groups(inputs, [8, 1, 3, 1, 1]) == ([([0, 1, 2], 21 - 8)], [3, 4])
    # a row with fewer than MIN_PREFIX tokens before its scored positions shares nothing
    assert 17 - 10 < MIN_PREFIX
    assert prefix_groups(inputs, [1, 10, 3, 1, 1]) == ([([0, 2], 20)], [1, 3, 4])


def test_shared_work_changes_no_number(policy):
    contexts, conts = _rows(policy)
    fast = policy.score_continuations(contexts, conts, batch_size=4)
    plain = policy.score_continuations(contexts, conts, batch_size=3, shared_prefix=False)
    assert fast.logprobs == pytest.approx(plain.logprobs, abs=1e-4)
    assert fast.greedy == plain.greedy
    assert fast.stats["inputs"] == 3 + 3 and fast.stats["rows"] == len(contexts)  # four letters, one input
    assert fast.stats["prefix_tokens"] > 0 and plain.stats["prefix_tokens"] == 0
    assert fast.stats["forward_tokens"] < plain.stats["forward_tokens"] / 2
    # and both equal the per-token interface on the same token ids, nothing shared
    batch = policy.batch_from_ids(["x"] * len(contexts), contexts, conts)
    with torch.no_grad():
        lls = policy.score(batch, shared_prefix=False).sum(dim=1).tolist()
    assert fast.logprobs == pytest.approx(lls, abs=1e-4)


def test_greedy_flag_is_the_argmax_continuation(policy):
    ctx = policy.tokenize(f"{HEAD}What is a star?\nAnswer:")
    greedy = policy.sample([TokenPrompt(token_ids=ctx)], max_new_tokens=4, greedy=True, ignore_eos=True)
    best = greedy.response_ids[0].tolist()
    other = best[:3] + [(best[3] + 1) % policy.vocab_size]
    out = policy.score_continuations([ctx, ctx, ctx], [best, other, best[:1]])
    assert out.greedy == [True, False, True]
    assert out.logprobs[0] == pytest.approx(float(greedy.logprobs[0].sum()), abs=1e-4)


class _WrongCache(HFPrefixRuntime):
    """A runtime whose prefix cache belongs to other tokens: what the one-time check is for."""

    def prefix(self, ids):
        return super().prefix(tuple(reversed(ids)))


def test_a_cache_that_does_not_reproduce_the_plain_pass_is_dropped(policy):
    contexts, conts = _rows(policy)
    runtime = _WrongCache(policy.model, policy.pad_token_id)
    check = PrefixCheck()
    with torch.no_grad():
        first = score_continuations(runtime, contexts, conts, check=check)
        again = score_continuations(runtime, contexts, conts, check=check)
        right = score_continuations(HFPrefixRuntime(policy.model, policy.pad_token_id), contexts, conts)
    assert first.stats["prefix_check_failures"] == 1 and not check.ok
    assert first.logprobs == pytest.approx(right.logprobs, abs=1e-4)
    assert again.stats["prefix_tokens"] == 0 and again.stats["prefix_check_failures"] == 0
    assert again.logprobs == pytest.approx(right.logprobs, abs=1e-4)


def test_bad_rows_are_one_line_errors(policy):
    with pytest.raises(UserError, match="non-empty context"):
        policy.score_continuations([[]], [[5]])
    with pytest.raises(UserError, match="2 contexts but 1 continuations"):
        policy.score_continuations([[1], [2]], [[5]])
