import pytest
import torch

from mmalign.errors import ConfigError
from mmalign.rewards import build_reward
from mmalign.rewards.hf_classifier import HFClassifierReward

PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "Human: Hi\n\nAssistant: Hello!\n\nHuman: Poem?\n\nAssistant:",
           "Alignment makes a model", "Human: Count to three.\n\nAssistant:"]
RESPONSES = [" Paris.", " Of course! Here is a short poem about the sea and the quick brown fox.", " helpful", " 1 2 3"]


@pytest.fixture(scope="module")
def classifier_dir(tiny_llama_dir, tmp_path_factory):
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_rm")
    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=2)
    model.config.pad_token_id = 0
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


def direct_scores(path, texts, label, add_special_tokens):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    out = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding at all
            ids = tok(text, return_tensors="pt", add_special_tokens=add_special_tokens)["input_ids"]
            out.append(model(input_ids=ids).logits[0, label].item())
    return torch.tensor(out)


@pytest.mark.parametrize("fmt", ["concat", "chat"])
def test_scores_equal_a_direct_forward_pass(classifier_dir, fmt):
    reward = build_reward({"kind": "hf_classifier", "path": str(classifier_dir), "label_index": 1, "format": fmt,
                           "device": "cpu"})
    texts = reward.texts(PROMPTS, RESPONSES)
    if fmt == "chat":
        assert texts[1].startswith("<s>user\nHi</s>\n<s>assistant\nHello!</s>\n<s>user\nPoem?</s>")
    else:
        assert texts[0] == PROMPTS[0] + RESPONSES[0]
    expected = direct_scores(classifier_dir, texts, 1, add_special_tokens=fmt != "chat")
    got = reward(PROMPTS, RESPONSES)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-5)


def test_batching_and_padding_do_not_change_scores(classifier_dir):
    scores = {}
    for bs in (1, 2, 4):
        r = HFClassifierReward(str(classifier_dir), batch_size=bs, format="concat", device="cpu")
        scores[bs] = r(PROMPTS, RESPONSES)
    assert torch.allclose(scores[1], scores[2], atol=1e-5) and torch.allclose(scores[1], scores[4], atol=1e-5)
    r = HFClassifierReward(str(classifier_dir), batch_size=4, format="concat", device="cpu")
    reversed_scores = r(PROMPTS[::-1], RESPONSES[::-1]).flip(0)
    assert torch.allclose(scores[4], reversed_scores, atol=1e-5)
    assert r.deterministic and r.fingerprint() == HFClassifierReward(str(classifier_dir), format="concat",
                                                                     device="cpu").fingerprint()


def test_causal_lm_folder_and_bad_label_are_config_errors(tiny_llama_dir, classifier_dir, tmp_path):
    with pytest.raises(ConfigError, match="reward.path: .* is a LlamaForCausalLM, not a reward model"):
        build_reward({"kind": "hf_classifier", "path": str(tiny_llama_dir)})
    with pytest.raises(ConfigError, match="reward.label_index: 5 is out of range; the model has 2 label"):
        build_reward({"kind": "hf_classifier", "path": str(classifier_dir), "label_index": 5})
    with pytest.raises(ConfigError, match="reward.path: reward model folder not found: .*missing"):
        build_reward({"kind": "hf_classifier", "path": str(tmp_path / "missing")})
