"""``kind: hf_classifier``: a Hugging Face sequence-classification reward model.

The score of (prompt, response) is one logit (``label_index``) of
``AutoModelForSequenceClassification`` on the pair's text, formatted as the model expects:
``chat`` applies the tokenizer's chat template to the dialogue (HH prompts become turns),
``concat`` is ``prompt + separator + response``; ``auto`` uses what ``mmalign reward`` recorded in
the model folder (``mmalign_reward.json``), else ``chat`` if the tokenizer has a template.

Batches are right-padded (and truncated from the left, keeping the response), so each row's
score equals that of a forward pass on the row alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmalign.data.hh import hh_messages
from mmalign.errors import ConfigError
from mmalign.rewards.base import check_batch, stable_hash, to_scores
from mmalign.utils.digest import weights_digest
from mmalign.utils.io_errors import check_model_dir, check_tokenizer_dir, reading

META_FILE = "mmalign_reward.json"


def format_pairs(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], mode: str,
                 separator: str = "") -> list[str]:
    """The texts a reward model reads for each (prompt, response) pair."""
    if mode == "concat":
        return [p + separator + r for p, r in zip(prompts, responses)]
    if mode != "chat":
        raise ValueError(f"format must be chat or concat, got {mode!r}")
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("format: 'chat' needs a tokenizer with a chat template (use format: concat)")
    texts = []
    for p, r in zip(prompts, responses):
        messages = hh_messages(p, r) or [{"role": "user", "content": p}, {"role": "assistant", "content": r.strip()}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def prepare_tokenizer(tokenizer: Any, model: Any | None = None) -> Any:
    """Right padding, left truncation, and a pad token (EOS if the tokenizer has none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def resolve_format(mode: str, tokenizer: Any, model_dir: str | Path | None) -> tuple[str, str | None]:
    """``(format, separator or None)``: ``auto`` reads the folder's metadata, then the tokenizer."""
    if mode != "auto":
        return mode, None
    meta_path = Path(model_dir) / META_FILE if model_dir is not None else None
    if meta_path is not None and meta_path.is_file():
        with reading(meta_path, "path"):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return str(meta.get("format", "concat")), meta.get("separator")
    return ("chat" if getattr(tokenizer, "chat_template", None) else "concat"), None


@torch.no_grad()
def classifier_scores(model: Any, tokenizer: Any, texts: Sequence[str], *, label_index: int = 0,
                      max_length: int = 512, batch_size: int = 16, add_special_tokens: bool = True) -> torch.Tensor:
    """Logit ``label_index`` of each text (batched by length, returned in input order)."""
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), dtype=torch.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt", add_special_tokens=add_special_tokens)
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        logits = model(**enc).logits
        out[torch.tensor(idx)] = logits[:, label_index].float().cpu()
    return out


class HFClassifierReward:
    """A sequence-classification model scoring (prompt, response) pairs; deterministic."""

    deterministic = True

    def __init__(self, path: str, *, label_index: int = 0, format: str = "auto", separator: str = "",
                 max_length: int = 512, batch_size: int = 16, device: str = "auto", dtype: str = "float32",
                 trust_remote_code: bool = False, revision: str | None = None, model: Any = None,
                 tokenizer: Any = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from mmalign.utils.device import resolve_device, resolve_dtype

        self.path = str(path)
        local = Path(path).expanduser()
        self._folder = local if local.is_dir() else None
        looks_local = self.path.startswith((".", "/", "~")) or self.path.count("/") > 1
        if model is None and looks_local and not local.is_dir():
            raise ConfigError(f"path: reward model folder not found: {self.path}")
        if model is None:
            dev = resolve_device(device)
            torch_dtype = resolve_dtype(dtype, dev)
            _check_is_classifier(self.path, revision, trust_remote_code)
            with reading(self.path, "path", what="reward model", broad=True):
                model = AutoModelForSequenceClassification.from_pretrained(
                    self.path, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code)
            if tokenizer is None:
                check_tokenizer_dir(self.path, "path")
                with reading(self.path, "path", what="tokenizer", broad=True):
                    tokenizer = AutoTokenizer.from_pretrained(self.path, revision=revision,
                                                              trust_remote_code=trust_remote_code)
            model.to(dev)
        self.model = model.eval()
        self.tokenizer = prepare_tokenizer(tokenizer, self.model)
        num_labels = int(getattr(self.model.config, "num_labels", 1))
        if label_index >= num_labels:
            raise ConfigError(f"label_index: {label_index} is out of range; the model has {num_labels} label(s)")
        self.label_index = label_index
        self.format, saved_sep = resolve_format(format, self.tokenizer, self._folder)
        self.separator = saved_sep if (format == "auto" and saved_sep is not None) else separator
        self.max_length = max_length
        self.batch_size = batch_size
        self._revision = revision

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        """The formatted texts the model scores."""
        return format_pairs(self.tokenizer, prompts, responses, self.format, self.separator)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 media: Sequence[list] | None = None) -> torch.Tensor:
        check_batch(prompts, responses, media)
        if not len(prompts):
            return torch.zeros(0, dtype=torch.float32)
        scores = classifier_scores(self.model, self.tokenizer, self.texts(prompts, responses),
                                   label_index=self.label_index, max_length=self.max_length,
                                   batch_size=self.batch_size, add_special_tokens=self.format != "chat")
        return to_scores(scores, len(prompts), source=f"hf_classifier reward '{self.path}'")

    def fingerprint(self) -> str:
        if self._folder is not None:
            weights = weights_digest(self._folder, suffixes=(".safetensors", ".bin", ".json"))
        else:
            weights = str(getattr(self.model.config, "_commit_hash", None) or self._revision or "")
        return stable_hash({"kind": "hf_classifier", "path": self.path if self._folder is None else "",
                            "weights": weights, "label": self.label_index, "format": self.format,
                            "separator": self.separator, "max_length": self.max_length})


def _check_is_classifier(path: str, revision: str | None, trust_remote_code: bool) -> None:
    """Refuse a causal LM checkpoint: its classification head would be random."""
    from transformers import AutoConfig

    check_model_dir(path, "path")
    with reading(path, "path", what="reward model", broad=True):
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    archs = getattr(config, "architectures", None) or []
    if archs and not any("SequenceClassification" in a for a in archs):
        raise ConfigError(f"path: '{path}' is a {archs[0]}, not a reward model (train one with `mmalign reward`)")
