"""``CausalLMValue``, PPO's value model on a transformer backbone: V(s_t) at response position t is
the head applied to the backbone's hidden state after the prompt and the response tokens < t,
whatever the padding; it starts at 0 and it trains."""

from __future__ import annotations

import pytest
import torch

from mmalign.models.loading import load_policy
from mmalign.rl.value import CausalLMValue

PROMPTS = ["The quick brown", "A much longer prompt than the first one, so the other is padded"]
RESPONSES = [" fox jumps over", " ok"]


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32", chat_template="off")


@pytest.fixture
def value(tiny_llama_dir):
    v = CausalLMValue.from_pretrained(str(tiny_llama_dir))
    torch.manual_seed(0)
    torch.nn.init.normal_(v.head.weight, std=1.0)
    torch.nn.init.normal_(v.head.bias, std=1.0)
    return v.eval()


def test_starts_at_zero_with_one_value_per_response_position(tiny_llama_dir, policy):
    v = CausalLMValue.from_pretrained(str(tiny_llama_dir))
    batch = policy.encode(PROMPTS, RESPONSES)
    out = v(batch)
    assert out.shape == batch.response_ids.shape and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))


def test_values_are_the_head_on_the_state_before_each_response_token(value, policy):
    """Against the backbone run on each row alone, without padding: the value at response position
    t is the head on the hidden state of the last token before response token t."""
    batch = policy.encode(PROMPTS, RESPONSES)
    assert (batch.prompt_mask == 0).any() and (batch.response_mask == 0).any()  # both paddings occur
    with torch.no_grad():
        got = value(batch)
        for r in range(len(PROMPTS)):
            prompt = batch.prompt_ids[r][batch.prompt_mask[r].bool()]
            response = batch.response_ids[r][batch.response_mask[r].bool()]
            ids = torch.cat([prompt, response])[None]
            hidden = value.backbone(input_ids=ids).last_hidden_state[0]
            want = value.head(hidden[len(prompt) - 1:len(prompt) - 1 + len(response)]).squeeze(-1)
            assert torch.allclose(got[r, :len(response)], want, atol=1e-5), r
            assert torch.equal(got[r, len(response):], torch.zeros_like(got[r, len(response):]))


def test_a_value_does_not_see_its_own_token_or_later_ones(value, policy):
    a = policy.batch_from_ids(["p"], [[5, 6, 7]], [[10, 11, 12, 13]])
    b = policy.batch_from_ids(["p"], [[5, 6, 7]], [[10, 11, 40, 41]])  # tokens 2 and 3 differ
    with torch.no_grad():
        va, vb = value(a), value(b)
    assert torch.allclose(va[0, :3], vb[0, :3], atol=1e-6)  # V(s_2) has seen tokens 0 and 1 only
    assert not torch.allclose(va[0, 3], vb[0, 3])  # V(s_3) has seen token 2


def test_it_regresses_onto_returns(value, policy):
    batch = policy.encode(PROMPTS, RESPONSES)
    mask = batch.response_mask.float()
    targets = torch.randn(mask.shape, generator=torch.Generator().manual_seed(1)) * mask
    value.train()
    opt = torch.optim.Adam(value.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = ((value(batch) - targets) ** 2 * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.05 * losses[0], losses
