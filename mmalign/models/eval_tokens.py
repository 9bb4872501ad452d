"""Plain-text tokens and the model window as lm-evaluation-harness's ``hf`` model sees them.

``tok_encode`` is ``HFLM.tok_encode``: ``tokenizer.encode(text)`` with the tokenizer's own
special-token behaviour, except that a text already starting with the BOS text is encoded without
special tokens (``add_special_tokens`` forces it either way). ``model_window`` is
``HFLM.max_length``: the config's ``n_positions`` / ``max_position_embeddings`` / ``n_ctx``, else
the tokenizer's ``model_max_length``, else 2048. The scoring adapters (:mod:`mmalign.models.text`,
:mod:`mmalign.models.exported`) expose them as ``tokenize`` and ``max_length``.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_LENGTH = 2048
_TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length


def prefix_token_id(tokenizer: Any) -> int:
    """The token lm-eval starts an empty context from: BOS, else EOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tok_encode(tokenizer: Any, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """``HFLM.tok_encode`` of ``text`` with a Hugging Face tokenizer."""
    kwargs: dict[str, bool] = {}
    if add_special_tokens is not None:
        kwargs["add_special_tokens"] = add_special_tokens
    else:
        prefix = prefix_token_id(tokenizer)
        bos_text = tokenizer.decode(prefix) if prefix is not None else None
        if bos_text and text.startswith(bos_text):
            kwargs["add_special_tokens"] = False
    return list(tokenizer.encode(text, **kwargs))


def model_window(config: Any, tokenizer: Any) -> int:
    """lm-eval's ``max_length``: text config, then config, then tokenizer, then 2048."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH
