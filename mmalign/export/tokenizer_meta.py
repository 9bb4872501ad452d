"""What GGUF and the edge manifest need from a Hugging Face ``tokenizer.json`` directory:
vocabulary in id order, merges, token types, special token ids, chat template."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign.errors import UserError

# gguf.TokenType values (kept literal so this module needs no gguf import)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class TokenizerMeta:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    model: str  # "gpt2" (byte-level BPE)
    pre: str  # llama.cpp pre-tokenizer name
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/pad/unk
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None

    def padded(self, n_vocab: int) -> TokenizerMeta:
        """Pad the vocabulary to the model's ``n_vocab`` rows with unused ``[PAD{i}]`` tokens."""
        extra = n_vocab - len(self.tokens)
        if extra < 0:
            raise UserError(f"tokenizer has {len(self.tokens)} tokens but the model only {n_vocab} embedding rows")
        tokens = self.tokens + [f"[PAD{i}]" for i in range(len(self.tokens), n_vocab)]
        return TokenizerMeta(tokens, self.token_types + [UNUSED] * extra, self.merges, self.model, self.pre,
                             dict(self.special_ids), self.add_bos, self.add_eos, self.chat_template)


def special_token_ids(tok_dir: Path, vocab: dict[str, int]) -> dict[str, int]:
    ids: dict[str, int] = {}
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    for kind in ("bos", "eos", "pad", "unk"):
        value = cfg.get(f"{kind}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value in vocab:
            ids[kind] = vocab[value]
    model_cfg = tok_dir / "config.json"
    if model_cfg.is_file():  # fall back to the model config's ids
        mc = json.loads(model_cfg.read_text(encoding="utf-8"))
        for kind in ("bos", "eos", "pad"):
            value = mc.get(f"{kind}_token_id")
            if isinstance(value, list):
                value = value[0] if value else None
            if kind not in ids and isinstance(value, int):
                ids[kind] = value
    return ids


def read_tokenizer_meta(tok_dir: str | Path) -> TokenizerMeta:
    """Read ``tokenizer.json`` (+ ``tokenizer_config.json``, ``chat_template.jinja``) in ``tok_dir``."""
    tok_dir = Path(tok_dir)
    path = tok_dir / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable tokenizer ({exc})") from exc
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UserError(f"{path}: GGUF export supports byte-level BPE tokenizers; found "
                        f"{model.get('type')}{' with byte_fallback' if model.get('byte_fallback') else ''}")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [UNUSED] * n
    for content, idx in vocab.items():
        tokens[idx] = content
        t = added.get(content)
        types[idx] = NORMAL if t is None else (CONTROL if t.get("special") else USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = spec.get("pre_tokenizer") or {}
    pre_name = "gpt-2" if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) else "default"
    template = None
    cfg_path = tok_dir / "tokenizer_config.json"
    if (tok_dir / "chat_template.jinja").is_file():
        template = (tok_dir / "chat_template.jinja").read_text(encoding="utf-8")
    elif cfg_path.is_file():
        template = json.loads(cfg_path.read_text(encoding="utf-8")).get("chat_template")
    special = special_token_ids(tok_dir, vocab)
    add_bos, add_eos = _adds_bos_eos(path, special)
    return TokenizerMeta(tokens, types, merges, "gpt2", pre_name, special, add_bos, add_eos,
                         template if isinstance(template, str) else None)


def _adds_bos_eos(path: Path, special: dict[str, int]) -> tuple[bool, bool]:
    """Whether encoding adds BOS / EOS (what the tokenizer's post-processor does)."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(path)).encode("a", add_special_tokens=True).ids
    bos, eos = special.get("bos"), special.get("eos")
    return (bool(ids) and ids[0] == bos and bos is not None,
            len(ids) > 1 and ids[-1] == eos and eos is not None)
