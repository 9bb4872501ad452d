"""Summed log-probs of token continuations with the work shared: lm-eval's ``loglikelihood``, fast.

Row ``i`` is the model input ``context_i + continuation_i[:-1]``, scored at its last
``len(continuation_i)`` positions. Three things save work without changing a number:

* rows with the same input share one forward pass (MMLU's four one-token letters);
* inputs are batched longest first;
* inputs whose first :data:`MIN_PREFIX` tokens agree form a group, and the longest token prefix
  common to a group (MMLU: a subject's description and few-shot examples) runs once; its KV cache
  is reused by every batch of the group. The prefix is taken on token ids, so a merge across a text
  boundary can never make it wrong. The first cached batch is checked once against a plain pass
  (:class:`PrefixCheck`); a runtime that does not reproduce it scores without the cache from then on.

The forward passes come from a :class:`PrefixRuntime`: :mod:`mmalign.models.hf_prefix` for a torch
causal LM, :mod:`mmalign.models.exported` for ONNX and GGUF exports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mmalign.errors import UserError
from mmalign.models.policy import ContinuationScores

log = logging.getLogger(__name__)

MIN_PREFIX = 8  # shorter common prefixes are not worth a cache


class PrefixRuntime(Protocol):
    """Forward passes over token ids, optionally after a cached prefix."""

    tolerance: float  # how far a cached pass may differ from a plain one (absolute, in log-probs)

    def prefix(self, ids: tuple[int, ...]) -> Any | None:
        """The state (KV cache) after ``ids``, or None when this runtime cannot reuse one."""
        ...

    def forward(self, suffixes: list[tuple[int, ...]], need: list[int], state: Any | None) -> list[torch.Tensor]:
        """Log-probs ``[need_i, V]`` at the last ``need_i`` positions of each suffix, each run after
        ``state`` (None: from an empty context)."""
        ...


@dataclass
class PrefixCheck:
    """Whether a runtime's prefix cache was compared with a plain pass yet, and whether it agreed."""

    checked: bool = False
    ok: bool = True


def _rows(contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]):
    """Unique inputs, how many trailing positions each needs, and which rows use each."""
    if len(contexts) != len(continuations):
        raise UserError(f"score_continuations got {len(contexts)} contexts but {len(continuations)} continuations")
    index: dict[tuple[int, ...], int] = {}
    inputs: list[tuple[int, ...]] = []
    need: list[int] = []
    users: list[list[int]] = []
    for i, (ctx, cont) in enumerate(zip(contexts, continuations)):
        if not ctx or not cont:
            raise UserError(f"row {i}: a continuation is scored after a non-empty context and has at least one token")
        x = tuple(ctx) + tuple(cont[:-1])
        j = index.get(x)
        if j is None:
            j = index[x] = len(inputs)
            inputs.append(x)
            need.append(0)
            users.append([])
        need[j] = max(need[j], len(cont))
        users[j].append(i)
    return inputs, need, users


def _common_prefix(seqs: Sequence[tuple[int, ...]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


def prefix_groups(inputs: Sequence[tuple[int, ...]], need: Sequence[int]) -> tuple[list[tuple[list[int], int]], list[int]]:
    """``([(members, start), ...], plain)``: inputs that share their first ``start`` tokens (at least
    :data:`MIN_PREFIX`, and before every position they score), and the inputs that share nothing."""
    by_head: dict[tuple[int, ...], list[int]] = {}
    for j, x in enumerate(inputs):
        if len(x) - need[j] >= MIN_PREFIX:
            by_head.setdefault(x[:MIN_PREFIX], []).append(j)
    groups: list[tuple[list[int], int]] = []
    for members in by_head.values():
        if len(members) > 1:
            start = min(_common_prefix([inputs[j] for j in members]), min(len(inputs[j]) - need[j] for j in members))
            groups.append((members, start))
    cached = {j for members, _ in groups for j in members}
    return groups, [j for j in range(len(inputs)) if j not in cached]


def score_continuations(runtime: PrefixRuntime, contexts: Sequence[Sequence[int]],
                        continuations: Sequence[Sequence[int]], *, batch_size: int = 16, shared_prefix: bool = True,
                        check: PrefixCheck | None = None) -> ContinuationScores:
    """Score every (context, continuation) pair with ``runtime`` (see the module docstring);
    ``check`` carries the one-time cache check across calls (a fresh one checks again)."""
    check = check if check is not None else PrefixCheck()
    inputs, need, users = _rows(contexts, continuations)
    stats = {"rows": len(contexts), "inputs": len(inputs), "forward_tokens": 0, "prefix_tokens": 0,
             "prefix_check_failures": 0}
    if shared_prefix and check.ok:
        groups, plain = prefix_groups(inputs, need)
    else:
        groups, plain = [], list(range(len(inputs)))
    logprobs = [0.0] * len(contexts)
    greedy = [False] * len(contexts)
    for members, start in [*groups, (plain, 0)]:
        if not members:
            continue
        state = runtime.prefix(inputs[members[0]][:start]) if start else None
        stats["prefix_tokens"] += start if state is not None else 0
        start = start if state is not None else 0
        order = sorted(members, key=lambda j: (-len(inputs[j]), inputs[j]))
        for b in range(0, len(order), batch_size):
            chunk = order[b:b + batch_size]
            suffixes = [inputs[j][start:] for j in chunk]
            lps = runtime.forward(suffixes, [need[j] for j in chunk], state)
            stats["forward_tokens"] += len(chunk) * max(len(s) for s in suffixes)
            if state is not None and not check.checked and not _agrees(runtime, inputs[chunk[0]], need[chunk[0]], lps[0], check):
                again = score_continuations(runtime, contexts, continuations, batch_size=batch_size,
                                            shared_prefix=False, check=check)
                again.stats["prefix_check_failures"] += 1
                return again
            for j, lp in zip(chunk, lps):
                for i in users[j]:
                    cont = list(continuations[i])
                    tail = lp[lp.shape[0] - len(cont):]
                    logprobs[i] = float(tail.gather(1, torch.tensor(cont, device=tail.device).unsqueeze(1)).sum())
                    greedy[i] = tail.argmax(-1).tolist() == cont
    return ContinuationScores(logprobs, greedy, stats)


def _agrees(runtime: PrefixRuntime, row_input: tuple[int, ...], need: int, cached: torch.Tensor,
            check: PrefixCheck) -> bool:
    """Compare one cached result with a plain pass; turn the cache off for good if they differ."""
    check.checked = True
    plain = runtime.forward([row_input], [need], None)[0]
    if torch.allclose(plain.float(), cached.float(), atol=runtime.tolerance, rtol=0):
        return True
    log.warning("the prefix KV cache does not reproduce the plain forward pass; scoring without it")
    check.ok = False
    return False
