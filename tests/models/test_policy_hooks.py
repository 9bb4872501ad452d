"""The hooks recipes use instead of reaching into ``.model`` / ``.tokenizer`` (TrainablePolicy):
mode switches, freezing, decoding, the vocabulary and the prompt-fit check, on text and
multimodal policies alike."""

from __future__ import annotations

import pytest
import torch

from mmalign.errors import UserError
from mmalign.models.loading import load_policy
from mmalign.models.policy import Policy, TrainablePolicy


@pytest.fixture
def policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32")


def test_text_policies_are_trainable_policies(policy):
    assert isinstance(policy, TrainablePolicy) and isinstance(policy, Policy)
    assert isinstance(policy.reference(), TrainablePolicy)


def test_train_eval_and_training_follow_the_module(policy):
    assert policy.train() is policy and policy.training
    assert all(m.training for m in policy.model.modules())
    policy.eval()
    assert not policy.training and not any(m.training for m in policy.model.modules())
    policy.train(True)
    assert policy.training


def test_freeze_stops_every_parameter(policy):
    assert policy.trainable_parameters()
    policy.freeze()
    assert policy.trainable_parameters() == [] and not policy.training
    assert not any(p.requires_grad for p in policy.model.parameters())


def test_decode_is_how_samples_are_decoded(policy):
    s = policy.sample(["The quick brown"], n=3, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    for row, text in enumerate(s.texts):
        ids = s.response_ids[row][s.response_mask[row].bool()].tolist()
        if s.finish_reasons[row] != "stop":  # a stop string is cut from the text, not from the ids
            assert policy.decode(ids) == text


def test_vocabulary_pad_and_size(policy, tiny_llama_dir):
    other = load_policy(tiny_llama_dir, device="cpu", dtype="float32")
    vocab = policy.vocabulary()
    assert vocab == other.vocabulary() and len(vocab) == policy.vocab_size
    assert policy.pad_token_id in vocab.values()
    vocab["<not-a-token>"] = -1  # a copy: the tokenizer is not changed
    assert "<not-a-token>" not in policy.vocabulary()


def test_check_prompts_raises_before_work(policy):
    policy.check_prompts(["short prompt"], 8)
    with pytest.raises(UserError, match="prompt 0"):
        policy.check_prompts(["word " * 5000], 8)


def test_prepare_and_forward_through_the_prepared_module(policy):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    assert policy.prepared_module is policy.model
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=1e-2)
    (prepared_opt,) = policy.prepare(accelerator, opt)
    assert prepared_opt is not opt and prepared_opt.optimizer is opt  # accelerate's wrapper
    unwrapped = policy.model
    batch = policy.encode(["The quick brown"], [" fox"])
    before = policy.score(batch).detach()
    with policy.through_prepared() as module:
        assert policy.model is module is policy.prepared_module
        loss = -policy.score(batch).sum()
        accelerator.backward(loss)
        prepared_opt.step()
    assert policy.model is unwrapped
    assert not torch.allclose(policy.score(batch).detach(), before)  # the step changed the weights
    with pytest.raises(RuntimeError), policy.through_prepared():
        raise RuntimeError("inside")
    assert policy.model is unwrapped  # restored after an exception too
