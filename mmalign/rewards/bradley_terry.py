r"""Bradley-Terry reward models: the pieces ``mmalign reward`` trains with.

A reward model r(x, y) is a one-label ``AutoModelForSequenceClassification``; on a preference
pair (x, y_chosen, y_rejected) the Bradley-Terry model says

.. math::

    P(y_c \succ y_r \mid x) = \sigma\big(r(x, y_c) - r(x, y_r)\big), \qquad
    \text{loss} = -\log \sigma\big(r(x, y_c) - r(x, y_r)\big).

* :func:`build_reward_model`: the classifier and its tokenizer, from a checkpoint or at toy width;
* :class:`PairScorer`: (r_chosen, r_rejected) for a batch of pairs, formatted as the
  ``hf_classifier`` reward will read them;
* :func:`bt_loss`, :func:`evaluate_pairs`: the loss, and held-out accuracy / loss / margin;
* :func:`save_reward_model`: the folder ``reward: {kind: hf_classifier, path: ...}`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmalign.config.schemas.reward_train import RewardModelInit
from mmalign.data import PreferenceRecord
from mmalign.rewards.hf_classifier import META_FILE, format_pairs, prepare_tokenizer
from mmalign.utils.atomic import atomic_write_text
from mmalign.utils.io_errors import check_model_dir, check_tokenizer_dir, reading


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The Bradley-Terry negative log-likelihood ``-log sigmoid(r_c - r_r)`` (``mean`` or ``sum``)."""
    nll = -F.logsigmoid(r_chosen - r_rejected)
    return nll.sum() if reduction == "sum" else nll.mean()


def build_reward_model(m: RewardModelInit, pairs: list[PreferenceRecord], dtype: torch.dtype,
                       path: str | None = None) -> tuple[Any, Any]:
    """A one-label sequence classifier and its tokenizer, from the ``model:`` section ``m``: its
    checkpoint (a causal LM gets a fresh scalar head), or a toy-width Llama with a tokenizer trained
    on ``pairs``' text. ``path`` (a resumed run's last checkpoint) overrides ``model.path``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = path or m.path
    revision = m.revision if path == m.path else None
    if path:
        check_model_dir(path, "model.path")
        with reading(path, "model.path", what="model config", broad=True):
            config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=m.trust_remote_code)
        check_tokenizer_dir(path, "model.path")
        with reading(path, "model.path", what="tokenizer", broad=True):
            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=m.trust_remote_code)
        prepare_tokenizer(tokenizer)
        config.num_labels = 1
        config.pad_token_id = tokenizer.pad_token_id
        with reading(path, "model.path", what="model", broad=True):
            model = AutoModelForSequenceClassification.from_pretrained(
                path, config=config, revision=revision, dtype=dtype, trust_remote_code=m.trust_remote_code)
        return model, tokenizer
    from transformers import LlamaForSequenceClassification

    from mmalign.models.toy import tiny_llama_config, train_bpe_tokenizer

    t = m.toy
    texts = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    tokenizer = prepare_tokenizer(train_bpe_tokenizer(texts, vocab_size=t.vocab_size))
    config = tiny_llama_config(len(tokenizer), hidden_size=t.hidden_size, num_layers=t.num_layers,
                               num_heads=t.num_heads, num_kv_heads=t.num_kv_heads, max_position=t.max_position,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id)
    config.num_labels = 1
    model = LlamaForSequenceClassification(config).to(dtype)
    return model, tokenizer


class PairScorer:
    """Formats and tokenises pairs, returns (r_chosen, r_rejected)."""

    def __init__(self, model: Any, tokenizer: Any, fmt: str, separator: str, max_length: int, device: torch.device):
        self.model, self.tokenizer, self.fmt, self.sep = model, tokenizer, fmt, separator
        self.max_length, self.device = max_length, device

    def __call__(self, pairs: list[PreferenceRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [p.prompt for p in pairs] * 2
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        texts = format_pairs(self.tokenizer, prompts, responses, self.fmt, self.sep)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", add_special_tokens=self.fmt != "chat")
        logits = self.model(input_ids=enc["input_ids"].to(self.device),
                            attention_mask=enc["attention_mask"].to(self.device)).logits[:, 0].float()
        return logits[:len(pairs)], logits[len(pairs):]


@torch.no_grad()
def evaluate_pairs(scorer: PairScorer, pairs: list[PreferenceRecord], batch_size: int) -> dict[str, float]:
    """Held-out pairwise accuracy (ties count half), mean BT loss and mean margin."""
    scorer.model.eval()
    correct, loss, margin = 0.0, 0.0, 0.0
    for i in range(0, len(pairs), batch_size):
        rc, rr = scorer(pairs[i:i + batch_size])
        d = rc - rr
        correct += float((d > 0).sum() + 0.5 * (d == 0).sum())
        loss += float(bt_loss(rc, rr, reduction="sum"))
        margin += float(d.sum())
    scorer.model.train()
    n = len(pairs)
    return {"eval_accuracy": correct / n, "eval_loss": loss / n, "eval_margin": margin / n}


def save_reward_model(out: Path, model: Any, tokenizer: Any, fmt: str, separator: str, max_length: int) -> None:
    """A Hugging Face folder ``hf_classifier`` loads, with the formatting it was trained on."""
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {"format": fmt, "separator": separator, "max_length": max_length, "objective": "bradley_terry"}
    atomic_write_text(Path(out) / META_FILE, json.dumps(meta, indent=2) + "\n")
