"""lm-eval's (context, continuation) pairs, reproduced exactly on a scoring policy's token ids.

``LM._encode_pair``: trailing whitespace of the context moves to the continuation; the pair is
encoded whole and the continuation is the tail after ``len(encode(context))`` tokens (``encode``
is the policy's ``tokenize``, lm-eval's ``tok_encode``). The model input is
``(context + continuation)[-(L+1):][:-1]`` for a maximum length ``L``, scored at the last
``len(continuation)`` positions: a :class:`Row` keeps the context cut on the left to that window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One continuation and the (left-truncated) context it is scored after."""

    context: tuple[int, ...]
    cont: tuple[int, ...]
    truncated: bool = False  # the context was cut on the left to fit the model

    @property
    def input_ids(self) -> tuple[int, ...]:
        """What the model is fed: the context and all continuation tokens but the last."""
        return self.context + self.cont[:-1]


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
    """The (context, continuation) lm-eval scores for ``ctx`` + ``cont``, the context left-truncated
    so that the model input fits ``max_length``."""
    if not cont:
        raise ValueError("empty continuation after tokenisation")
    if len(cont) > max_length:
        raise ValueError(f"a {len(cont)}-token continuation does not fit the {max_length}-token window")
    seq = (ctx + cont)[-(max_length + 1):]
    return Row(tuple(seq[:len(seq) - len(cont)]), tuple(cont), len(ctx) + len(cont) > max_length + 1)
