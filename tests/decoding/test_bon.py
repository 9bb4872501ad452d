"""Best-of-N / worst-of-N / blockwise decoding over a real tiny policy and python-callable rewards."""

from __future__ import annotations

import pytest
import torch

from mmalign.decoding import best_of_n, blockwise_decode, score_responses, select, worst_of_n
from mmalign.models.loading import load_policy

PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "The quick brown", "Best-of-N"]


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32")


def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


def test_select_ties_go_to_lowest_index():
    r = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 1.0], [5.0, 5.0, 5.0]])
    assert select(r, "best").tolist() == [1, 0, 0]
    assert select(r, "worst").tolist() == [0, 2, 0]


@pytest.mark.parametrize("mode", ["best", "worst"])
def test_best_and_worst_of_n_pick_extreme_reward(policy, mode):
    g = torch.Generator().manual_seed(0)
    fn = best_of_n if mode == "best" else worst_of_n
    choices = fn(policy, PROMPTS, length_reward, 6, max_new_tokens=8, generator=g)
    assert len(choices) == 3
    for c in choices:
        assert len(c.candidates) == 6 and c.rewards == [float(len(x)) for x in c.candidates]
        target = max(c.rewards) if mode == "best" else min(c.rewards)
        assert c.reward == target and c.index == c.rewards.index(target)
        assert c.response == c.candidates[c.index]


def test_constant_reward_picks_first_candidate(policy):
    choices = best_of_n(policy, PROMPTS, lambda p, r: [1.0] * len(r), 4, max_new_tokens=4)
    assert [c.index for c in choices] == [0, 0, 0]
    choices = worst_of_n(policy, PROMPTS, lambda p, r: [1.0] * len(r), 4, max_new_tokens=4)
    assert [c.index for c in choices] == [0, 0, 0]


def test_greedy_best_of_n_equals_one_greedy_generate(policy):
    choices = best_of_n(policy, PROMPTS, length_reward, 5, max_new_tokens=10, greedy=True)
    tok = policy.tokenizer
    for c, ids in zip(choices, policy.encode_prompts(PROMPTS, 10)):
        out = policy.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id)
        assert c.response == tok.decode(out[0, len(ids):], skip_special_tokens=True)
        assert len(set(c.candidates)) == 1


def test_rewards_scored_in_batches(policy):
    calls = []

    def reward(prompts, responses):
        calls.append(len(responses))
        return [0.0] * len(responses)

    scores = score_responses(reward, ["p"] * 10, ["r"] * 10, batch_size=4)
    assert calls == [4, 4, 2] and scores.shape == (10,)
    calls.clear()
    best_of_n(policy, PROMPTS, reward, 4, max_new_tokens=3, reward_batch_size=8)
    assert calls == [8, 4]


def test_blockwise_keeps_best_block(policy):
    blocks: dict[str, list[list[str]]] = {}  # prompt -> the candidates scored at each block

    def recording_reward(prompts, responses):
        by_prompt: dict[str, list[str]] = {}
        for p, r in zip(prompts, responses):
            by_prompt.setdefault(getattr(p, "text", p), []).append(r)
        for p, rs in by_prompt.items():
            blocks.setdefault(p, []).append(rs)
        return length_reward(prompts, responses)

    g = torch.Generator().manual_seed(1)
    choices = blockwise_decode(policy, PROMPTS[:2], recording_reward, block_size=3, num_candidates=4,
                               max_new_tokens=9, generator=g)
    assert len(choices) == 2
    for c in choices:
        assert c.response == c.candidates[c.index] and c.reward == max(c.rewards)
        history = blocks[c.prompt]
        assert history[-1] == c.candidates and all(len(cands) == 4 for cands in history)
        # each block continues the longest (= highest-reward, first on ties) candidate of the one before
        for before, after in zip(history, history[1:]):
            kept = max(before, key=len)
            assert all(x.startswith(kept) for x in after), (kept, after)
        assert any(len(set(cands)) > 1 for cands in history)  # the choice was not trivial
    assert max(len(h) for h in blocks.values()) >= 2  # at least one prompt went past its first block
    # with one greedy candidate per block it is plain greedy decoding
    greedy = blockwise_decode(policy, PROMPTS, length_reward, block_size=4, num_candidates=1,
                              max_new_tokens=12, greedy=True)
    plain = policy.sample(PROMPTS, 1, max_new_tokens=12, greedy=True)
    assert [c.response for c in greedy] == plain.texts
