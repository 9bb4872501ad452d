"""TextPolicy: prefix-shared sampling, exact log-probs, references, save/load, truncation policy."""

from __future__ import annotations

import pytest
import torch

from mmalign.errors import UserError
from mmalign.models.loading import load_policy
from mmalign.models.policy import Policy

PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "The quick brown", "Best-of-N"]


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32")


def test_implements_protocol(policy):
    assert isinstance(policy, Policy)


def test_sample_logprobs_equal_score(policy):
    g = torch.Generator().manual_seed(0)
    s = policy.sample(PROMPTS, n=4, max_new_tokens=10, generator=g)
    assert s.response_ids.shape[0] == 12 and s.n == 4
    assert s.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len(s.texts) == 12 and set(s.finish_reasons) <= {"eos", "stop", "length"}
    scored = policy.score(s)
    assert torch.allclose(scored, s.logprobs, atol=1e-4)
    assert (s.logprobs[s.response_mask.bool()] < 0).all()
    assert (s.logprobs[~s.response_mask.bool()] == 0).all()
    # the N rows of one prompt are different samples
    assert len({tuple(r.tolist()) for r in s.response_ids[:4]}) > 1


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_kept_distributions_are_the_policys_next_token_distributions(policy, temperature):
    """``keep_distributions``: each step's whole log-distribution, the one a forward pass of the
    policy gives at that position (what the exact-KL trainer reuses instead of recomputing it);
    the same samples as without it; zeros after a row ends."""
    kwargs = {"n": 4, "max_new_tokens": 10, "temperature": temperature, "stop": ["e"]}  # some rows end early
    plain = policy.sample(PROMPTS, generator=torch.Generator().manual_seed(3), **kwargs)
    s = policy.sample(PROMPTS, generator=torch.Generator().manual_seed(3), keep_distributions=True, **kwargs)
    assert plain.distributions is None
    assert torch.equal(s.response_ids, plain.response_ids) and torch.equal(s.logprobs, plain.logprobs)
    rows, steps = s.response_ids.shape
    assert s.distributions.shape == (rows, steps, policy.vocab_size)
    alive = s.response_mask.bool()
    assert not alive.all()
    with torch.no_grad():
        forward = (policy.logits(s).float() / temperature).log_softmax(-1)
    assert torch.allclose(s.distributions[alive], forward[alive], atol=1e-4)
    assert (s.distributions[~alive] == 0).all()
    picked = s.distributions.gather(-1, s.response_ids[..., None]).squeeze(-1) * alive
    assert torch.allclose(picked, s.logprobs, atol=1e-6)


def test_sample_reproducible_with_generator(policy):
    a = policy.sample(PROMPTS[:1], n=3, max_new_tokens=6, generator=torch.Generator().manual_seed(7))
    b = policy.sample(PROMPTS[:1], n=3, max_new_tokens=6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.response_ids, b.response_ids)


def test_top_k_one_is_greedy_and_logprob_zero(policy):
    s = policy.sample(PROMPTS, n=2, max_new_tokens=6, top_k=1)
    g = policy.sample(PROMPTS, n=1, max_new_tokens=6, greedy=True)
    assert torch.equal(s.response_ids[::2], g.response_ids)
    assert torch.allclose(s.logprobs, torch.zeros_like(s.logprobs))


def test_greedy_matches_generate(policy):
    tok = policy.tokenizer
    s = policy.sample(PROMPTS, n=3, max_new_tokens=12, greedy=True)
    for i, prompt_ids in enumerate(policy.encode_prompts(PROMPTS, 12)):
        ref = policy.model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                                    do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
        new = ref[0, len(prompt_ids):].tolist()
        for j in range(3):
            row = s.response_ids[i * 3 + j][s.response_mask[i * 3 + j].bool()].tolist()
            assert row == new[: len(row)]


def test_eos_and_stop_strings(policy):
    # force EOS by making it the only allowed token through a huge bias
    eos = policy.tokenizer.eos_token_id
    bias = torch.zeros(policy.model.config.vocab_size)
    bias[eos] = 1e4
    policy.model.lm_head.bias = torch.nn.Parameter(bias)
    try:
        s = policy.sample(PROMPTS[:1], n=2, max_new_tokens=5)
    finally:
        policy.model.lm_head.bias = None
    assert s.finish_reasons == ["eos", "eos"] and s.response_mask.sum().item() == 2
    assert s.response_ids[:, 0].tolist() == [eos, eos] and s.texts == ["", ""]
    # a stop string: sample greedily, then stop at a substring of the greedy text
    g = policy.sample(PROMPTS[:1], n=1, max_new_tokens=12, greedy=True)
    text = g.texts[0]
    stop = text[3:5]
    s = policy.sample(PROMPTS[:1], n=1, max_new_tokens=12, greedy=True, stop=[stop])
    assert s.finish_reasons == ["stop"]
    assert s.texts[0] == text[: text.find(stop)]


def test_prompt_too_long_errors_or_truncates(policy):
    long = "beep tone " * 400
    with pytest.raises(UserError, match="prompt 1 has .* tokens"):
        policy.sample(["hi", long], n=1, max_new_tokens=4)
    policy.truncation = "left"
    try:
        with pytest.warns(UserWarning, match="truncated from the left"):
            s = policy.sample(["hi", long], n=1, max_new_tokens=4)
        assert s.prompt_mask[1].sum() == policy.context_length - 4
    finally:
        policy.truncation = "error"


def test_n_below_one(policy):
    with pytest.raises(UserError, match="n must be >= 1"):
        policy.sample(PROMPTS, n=0)


def test_chat_template_used(policy):
    ids = policy.encode_prompts(["hello"])[0]
    assert policy.tokenizer.decode(ids).endswith("assistant\n")
    policy.chat_template = "off"
    try:
        assert policy.tokenizer.decode(policy.encode_prompts(["hello"])[0]) == "hello"
    finally:
        policy.chat_template = "auto"


def test_encode_then_score_matches_sampled_tokens(policy):
    s = policy.sample(PROMPTS[:2], n=1, max_new_tokens=8, greedy=True)
    batch = policy.encode(PROMPTS[:2], ["Paris is nice", "fox"], add_eos=True)
    lp = policy.score(batch)
    assert lp.shape == batch.response_ids.shape
    assert batch.response_ids[0, batch.response_mask[0].sum() - 1] == policy.tokenizer.eos_token_id
    assert (lp[batch.response_mask.bool()] < 0).all() and s.texts


def _step(policy, batch):
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=1.0)
    loss = -policy.score(batch).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("lora", [False, True])
def test_training_step_leaves_reference_unchanged(tiny_llama_dir, lora):
    pol = load_policy(tiny_llama_dir, device="cpu", dtype="float32", lora={"enabled": lora, "r": 4})
    if lora:  # start adapters away from zero so that they matter
        for name, p in pol.model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    ref = pol.reference()
    assert ref.trainable_parameters() == []
    if lora:
        assert ref.model is pol.model  # the same weights, adapters disabled: no extra memory
    batch = pol.encode(PROMPTS, ["Paris.", "fox jumps", "sampling"], add_eos=True)
    before_ref = ref.score(batch)
    before_pol = pol.score(batch).detach()
    if lora:
        assert not torch.allclose(before_ref, before_pol)
    _step(pol, batch)
    after_pol = pol.score(batch).detach()
    assert not torch.allclose(before_pol, after_pol, atol=1e-3)
    assert torch.equal(ref.score(batch), before_ref)
    assert not before_ref.requires_grad


def test_save_load_full_weights(policy, tmp_path):
    batch = policy.encode(PROMPTS, ["a", "b c", "d"])
    policy.save(tmp_path / "full")
    again = load_policy(tmp_path / "full", device="cpu", dtype="float32")
    assert torch.equal(again.score(batch), policy.score(batch))
    assert (tmp_path / "full" / "model.safetensors").is_file()


def test_save_load_lora_adapters(tiny_llama_dir, tmp_path):
    pol = load_policy(tiny_llama_dir, device="cpu", dtype="float32", lora={"enabled": True, "r": 4})
    batch = pol.encode(PROMPTS, ["a", "b c", "d"])
    _step(pol, batch)
    pol.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    again = load_policy(tmp_path / "lora", device="cpu", dtype="float32")
    assert again.is_peft
    with torch.no_grad():
        assert torch.equal(again.score(batch), pol.score(batch))


def test_save_load_4bit(tiny_llama_dir, tmp_path):
    pol = load_policy(tiny_llama_dir, device="cpu", dtype="float32", quantization="4bit")
    full = load_policy(tiny_llama_dir, device="cpu", dtype="float32")
    batch = pol.encode(PROMPTS, ["a", "b c", "d"])
    with torch.no_grad():
        lp = pol.score(batch)
        assert not torch.equal(lp, full.score(batch))  # really quantised
        assert torch.allclose(lp, full.score(batch), atol=0.5)
    pol.save(tmp_path / "q4")
    again = load_policy(tmp_path / "q4", device="cpu", dtype="float32")
    assert again.quantization == "4bit"
    with torch.no_grad():
        assert torch.equal(again.score(batch), lp)
    s = again.sample(PROMPTS[:1], n=2, max_new_tokens=4)  # sampling runs on the 4-bit model
    assert torch.allclose(again.score(s), s.logprobs, atol=1e-4)


def test_missing_checkpoint_dir(tmp_path):
    with pytest.raises(UserError, match="checkpoint directory not found"):
        load_policy(str(tmp_path / "nope" / "final"))


def test_lora_load_prints_no_future_warning(tiny_llama_dir):
    import importlib
    import warnings

    import mmalign

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # show everything ...
        importlib.reload(mmalign)  # ... except what the package itself filters
        load_policy(tiny_llama_dir, device="cpu", dtype="float32", lora={"enabled": True, "r": 4})
    future = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert not future, [str(w.message) for w in future]
