"""lm-eval's tokenisation of (context, continuation) pairs, reproduced exactly.

``HFLM.tok_encode``: ``tokenizer.encode(text)`` with the tokenizer's own special-token behaviour,
except that a string already starting with the BOS text is encoded without special tokens
(``add_bos_token`` forces it either way). ``LM._encode_pair``: trailing whitespace of the context
moves to the continuation; the pair is encoded whole and the continuation is the tail after
``len(tok_encode(context))`` tokens. The model input is ``(context + continuation)[-(L+1):][:-1]``
for a maximum length ``L`` and the continuation is scored at the last ``len(continuation)`` positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    """One model input and the continuation it scores at its last ``len(cont)`` positions."""

    input_ids: tuple[int, ...]
    cont: tuple[int, ...]
    truncated: bool = False  # the context was cut on the left to fit the model


def hf_encoder(tokenizer: Any, add_bos_token: bool | None = None) -> Callable[[str], list[int]]:
    """``HFLM.tok_encode`` for ``tokenizer`` (a Hugging Face tokenizer)."""
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    bos_text = tokenizer.decode(prefix_id) if prefix_id is not None else None

    def encode(text: str) -> list[int]:
        kwargs: dict[str, bool] = {}
        if add_bos_token is not None:
            kwargs["add_special_tokens"] = add_bos_token
        elif bos_text and text.startswith(bos_text):
            kwargs["add_special_tokens"] = False
        return list(tokenizer.encode(text, **kwargs))

    return encode


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``LM._encode_pair`` for a causal model."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    ctx = encode(context)
    return ctx, whole[len(ctx):]


def make_row(ctx: list[int], cont: list[int], max_length: int) -> Row:
    """The input lm-eval feeds the model for (ctx, cont), left-truncated to ``max_length``."""
    if not cont:
        raise ValueError("empty continuation after tokenisation")
    seq = (ctx + cont)[-(max_length + 1):][:-1]
    return Row(tuple(seq), tuple(cont), len(ctx) + len(cont) > max_length + 1)
