"""Bradley-Terry reward-model components: the loss, the pair scorer (which must score pairs exactly
as the ``hf_classifier`` reward later reads them), held-out evaluation and the saved folder."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmalign.config.schemas.reward_train import RewardModelInit, ToyRewardModelConfig
from mmalign.data import PreferenceRecord
from mmalign.rewards.bradley_terry import (
    PairScorer,
    bt_loss,
    build_reward_model,
    evaluate_pairs,
    save_reward_model,
)
from mmalign.rewards.hf_classifier import META_FILE, HFClassifierReward

PAIRS = [
    PreferenceRecord(prompt="Q: 2+2?", chosen=" four", rejected=" five"),
    PreferenceRecord(prompt="Q: capital of France?", chosen=" Paris, of course", rejected=" Rome"),
    PreferenceRecord(prompt="Say hi.", chosen=" hi", rejected=" no thanks, not today"),
]


def test_bt_loss_is_the_negative_log_likelihood_of_the_preference():
    rc, rr = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    nll = [math.log1p(math.exp(-2.0)), math.log(2.0), math.log1p(math.exp(2.0))]
    assert float(bt_loss(rc, rr)) == pytest.approx(sum(nll) / 3)
    assert float(bt_loss(rc, rr, reduction="sum")) == pytest.approx(sum(nll))
    # P(chosen > rejected) = sigmoid(d): the loss depends on the difference only
    assert float(bt_loss(rc + 5, rr + 5)) == pytest.approx(sum(nll) / 3)


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    init = RewardModelInit(toy=ToyRewardModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                                    vocab_size=300))
    model, tokenizer = build_reward_model(init, PAIRS * 20, torch.float32)
    return model.eval(), tokenizer


def test_toy_model_is_a_one_label_classifier_with_a_pad_token(toy_model):
    model, tokenizer = toy_model
    assert model.config.num_labels == 1 and tokenizer.pad_token_id is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_the_saved_model_scores_pairs_as_the_trainer_did(toy_model, tmp_path):
    """Training (PairScorer) and inference (``kind: hf_classifier`` on the saved folder) see the
    same texts and give the same scores, row by row, whatever the padding of the batch."""
    model, tokenizer = toy_model
    scorer = PairScorer(model, tokenizer, "concat", " || ", 128, torch.device("cpu"))
    with torch.no_grad():
        rc, rr = scorer(PAIRS)
    save_reward_model(tmp_path / "rm", model, tokenizer, "concat", " || ", 128)
    meta = json.loads((tmp_path / "rm" / META_FILE).read_text())
    assert meta == {"format": "concat", "separator": " || ", "max_length": 128, "objective": "bradley_terry"}
    reward = HFClassifierReward(str(tmp_path / "rm"), device="cpu", batch_size=2)
    assert reward.format == "concat" and reward.separator == " || "
    got = reward([p.prompt for p in PAIRS] * 2, [p.chosen for p in PAIRS] + [p.rejected for p in PAIRS])
    assert torch.allclose(got, torch.cat([rc, rr]), atol=1e-5)
    assert not torch.allclose(rc, rr)  # a random head still tells the texts apart


class _FixedScorer:
    """Returns given (r_chosen, r_rejected) per batch; records the model's mode during the call."""

    def __init__(self, rc, rr):
        self.model = torch.nn.Linear(1, 1)
        self.rc, self.rr, self.modes = torch.tensor(rc), torch.tensor(rr), []

    def __call__(self, pairs):
        self.modes.append(self.model.training)
        i = self.calls = getattr(self, "calls", -1) + 1
        return self.rc[2 * i:2 * i + len(pairs)], self.rr[2 * i:2 * i + len(pairs)]


def test_evaluation_counts_ties_half_and_restores_training_mode():
    scorer = _FixedScorer([1.0, 0.0, 0.0, 3.0, -1.0], [0.0, 0.0, 2.0, 1.0, 1.0])
    scorer.model.train()
    records = [PAIRS[0]] * 5
    out = evaluate_pairs(scorer, records, batch_size=2)
    d = torch.tensor([1.0, 0.0, -2.0, 2.0, -2.0])
    assert out["eval_accuracy"] == pytest.approx((1 + 0.5 + 0 + 1 + 0) / 5)
    assert out["eval_loss"] == pytest.approx(float(-torch.nn.functional.logsigmoid(d).mean()))
    assert out["eval_margin"] == pytest.approx(float(d.mean()))
    assert scorer.modes == [False, False, False] and scorer.model.training
