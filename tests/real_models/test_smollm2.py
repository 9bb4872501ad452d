"""SmolLM2-135M-Instruct through mmalign's own loading path: what toy models cannot show (a real
49k BPE tokenizer, its chat template, tied embeddings, a model that answers)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmalign.errors import UserError
from mmalign.models.loading import load_policy
from tests.real_models.conftest import linked_copy

pytestmark = pytest.mark.real_model

QUESTION = "What is the capital of France?"
PROMPTS = [QUESTION, "Write a haiku about the sea."]


@pytest.fixture(scope="module")
def policy(smollm2_dir):
    return load_policy(smollm2_dir, device="cpu", dtype="float32")


def test_the_build_is_a_plain_tied_llama_checkpoint(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config  # de-quantised: loads, trains and exports as float
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    assert [p.name for p in smollm2_dir.glob("*.safetensors")] == ["model.safetensors"]
    assert not list(smollm2_dir.glob("*.bin"))


def test_prompts_go_through_the_chat_template_and_the_model_answers(policy):
    text = policy.tokenizer.decode(policy.encode_prompts([QUESTION])[0])
    assert f"<|im_start|>user\n{QUESTION}<|im_end|>\n" in text and text.endswith("<|im_start|>assistant\n")
    greedy = policy.sample([QUESTION], n=1, max_new_tokens=12, greedy=True)
    assert "Paris" in greedy.texts[0], greedy.texts
    assert greedy.finish_reasons[0] == "eos"  # <|im_end|> ends the turn


def test_score_equals_the_samplers_logprobs(policy):
    s = policy.sample(PROMPTS, n=2, max_new_tokens=12, temperature=1.0,
                      generator=torch.Generator().manual_seed(0))
    assert s.response_mask.sum() > 20
    with torch.no_grad():
        lp = policy.score(s)
    mask = s.response_mask.bool()
    torch.testing.assert_close(lp[mask], s.logprobs[mask], atol=2e-4, rtol=0)
    assert (lp[mask] < 0).all()


def _lora_step(pol, batch):
    opt = torch.optim.AdamW(pol.trainable_parameters(), lr=1e-2)
    loss = -pol.score(batch).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_a_lora_step_changes_the_policy_and_not_the_reference(smollm2_dir):
    pol = load_policy(smollm2_dir, device="cpu", dtype="float32", lora={"enabled": True, "r": 4})
    ref = pol.reference()
    batch = pol.encode(PROMPTS, ["Paris.", "Waves fold on the shore"], add_eos=True)
    with torch.no_grad():
        before_ref, before_pol = ref.score(batch), pol.score(batch)
    assert torch.equal(before_ref, before_pol)  # LoRA B starts at zero
    _lora_step(pol, batch)
    with torch.no_grad():
        after_pol, after_ref = pol.score(batch), ref.score(batch)
    mask = batch.response_mask.bool()
    assert after_pol[mask].sum() > before_pol[mask].sum() + 0.1  # the step raised the likelihood
    assert torch.equal(after_ref, before_ref)


def test_a_lora_adapter_loads_after_its_base_moves(smollm2_dir, tmp_path):
    tree = tmp_path / "a"
    base = linked_copy(smollm2_dir, tree / "models" / "smollm2")
    pol = load_policy(base, device="cpu", dtype="float32", lora={"enabled": True, "r": 4})
    batch = pol.encode(PROMPTS, ["Paris.", "Waves fold on the shore"], add_eos=True)
    _lora_step(pol, batch)
    pol.save(tree / "runs" / "r" / "adapter")
    with torch.no_grad():
        want = pol.score(batch)
    del pol

    moved = tmp_path / "b"
    tree.rename(moved)  # the whole tree moves: the base is found relative to the adapter
    again = load_policy(moved / "runs" / "r" / "adapter", device="cpu", dtype="float32")
    assert again.is_peft and again.base == str((moved / "models" / "smollm2").resolve())
    with torch.no_grad():
        torch.testing.assert_close(again.score(batch), want, atol=1e-5, rtol=0)
    del again

    shutil.move(moved / "models" / "smollm2", tmp_path / "elsewhere")  # now the base alone moves
    with pytest.raises(UserError, match="base model of LoRA adapter .* is not found") as err:
        load_policy(moved / "runs" / "r" / "adapter", device="cpu", dtype="float32")
    assert "\n" not in str(err.value)


def test_the_gguf_file_itself_loads_as_model_path(smollm2_dir, policy):
    from mmalign.models.smollm2 import gguf_path

    direct = load_policy(str(gguf_path()), device="cpu", dtype="float32")
    assert direct.uses_chat_template()
    batch = policy.encode([QUESTION], ["The capital of France is Paris."], add_eos=True)
    with torch.no_grad():
        torch.testing.assert_close(direct.score(batch), policy.score(batch), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="quantization '4bit' of a GGUF file is not supported"):
        load_policy(str(gguf_path()), device="cpu", dtype="float32", quantization="4bit")
