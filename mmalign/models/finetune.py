"""Pieces the SFT and distillation recipes share: tokenising demonstrations, the response-only
cross-entropy, packing, and the token-level forward KL. (Batch order, schedule and checkpoints are
:mod:`mmalign.training`'s, shared with every recipe.)"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmalign.errors import ConfigError, DataError, PromptError
from mmalign.models.policy import Prompt, SequenceBatch
from mmalign.models.text import TextPolicy

log = logging.getLogger(__name__)


def split_records(data: list[Any], held: list[Any] | None, fraction: float,
                  seed: int) -> tuple[list[Any], list[Any]]:
    """Training and held-out records (a seeded ``fraction`` of ``data`` unless ``held`` is given)."""
    if held is not None:
        return data, held
    if fraction == 0:
        return data, []
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(fraction * len(data))))
    if n_eval >= len(data):
        raise ConfigError(f"eval_fraction: leaves no training examples out of {len(data)}")
    out = set(order[:n_eval])
    return [r for i, r in enumerate(data) if i not in out], [data[i] for i in sorted(out)]


@dataclass
class Example:
    """One tokenised demonstration."""

    prompt: str | Prompt  # keeps its media for the forward passes
    prompt_ids: list[int]
    response_ids: list[int]


def tokenize_examples(policy: TextPolicy, prompts: Sequence[str | Prompt], responses: Sequence[str], *,
                      max_seq_len: int, sources: Sequence[str] | None = None) -> list[Example]:
    """Prompt ids (chat template, truncation policy) + response ids + EOS, cut to ``max_seq_len``.

    A prompt that leaves no room for a response is an error naming its source (or, with
    ``truncation: left``, is cut from the left); long responses are cut on the right (logged).
    """
    tok = policy.tokenizer
    saved = policy.max_prompt_tokens
    policy.max_prompt_tokens = max_seq_len - 1 if not saved else min(saved, max_seq_len - 1)
    try:
        prompt_ids = policy.encode_prompts(prompts, max_new_tokens=1)
    except PromptError as exc:
        if sources is None:
            raise
        raise DataError(f"{sources[exc.index]}: {exc.problem} (train.max_seq_len {max_seq_len})") from None
    finally:
        policy.max_prompt_tokens = saved
    out, cut = [], 0
    for prompt, p_ids, response in zip(prompts, prompt_ids, responses):
        r_ids = list(tok(response, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
        room = max_seq_len - len(p_ids)
        if len(r_ids) > room:
            r_ids, cut = r_ids[:room], cut + 1
        out.append(Example(prompt=prompt, prompt_ids=p_ids, response_ids=r_ids))
    if cut:
        log.warning("%d responses cut to fit max_seq_len=%d", cut, max_seq_len)
    return out


def to_batch(policy: TextPolicy, examples: Sequence[Example]) -> SequenceBatch:
    return policy.batch_from_ids([e.prompt for e in examples], [e.prompt_ids for e in examples],
                                 [e.response_ids for e in examples])


def response_nll(policy: TextPolicy, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of response-token NLL, number of response tokens)."""
    logp = policy.score(batch)
    return -logp.sum(), batch.response_mask.sum()


def pack_examples(examples: Sequence[Example], block: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate examples into rows of ``block`` tokens; ``loss_mask`` marks response tokens."""
    ids: list[int] = []
    loss: list[int] = []
    for e in examples:
        ids += e.prompt_ids + e.response_ids
        loss += [0] * len(e.prompt_ids) + [1] * len(e.response_ids)
    rows = max(1, -(-len(ids) // block))
    pad = rows * block - len(ids)
    ids_t = torch.tensor(ids + [pad_id] * pad).view(rows, block)
    loss_t = torch.tensor(loss + [0] * pad).view(rows, block)
    return ids_t, loss_t


def packed_nll(policy: TextPolicy, ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Response-token NLL of packed rows (attention runs across example boundaries)."""
    ids, loss_mask = ids.to(policy.device), loss_mask.to(policy.device)
    logits = policy.model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    target, mask = ids[:, 1:], loss_mask[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return (nll * mask.reshape(-1)).sum(), mask.sum()


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0, vocab: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over response tokens of KL(p_teacher || p_student) at ``temperature`` (times T^2), and
    the token count. Logits are cut to the shared ``vocab``."""
    if vocab is not None:
        teacher_logits, student_logits = teacher_logits[..., :vocab], student_logits[..., :vocab]
    t = (teacher_logits.float() / temperature).log_softmax(-1)
    s = (student_logits.float() / temperature).log_softmax(-1)
    kl = (t.exp() * (t - s)).sum(-1) * temperature**2
    mask = mask.to(kl.device)
    return (kl * mask).sum(), mask.sum()
