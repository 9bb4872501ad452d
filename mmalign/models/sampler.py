"""Prefix-shared ancestral sampling for Hugging Face causal LMs.

Each prompt is prefilled once; its KV cache is then expanded ``n`` ways
(:meth:`transformers.Cache.batch_repeat_interleave`) and all ``B*n`` rows decode together in one
loop that applies temperature / top-k / top-p itself, so the log-prob of every sampled token under
the sampling distribution comes out exactly. ``generate(num_return_sequences=n)`` instead
re-encodes every prompt ``n`` times. Rows stop at EOS or a stop string; finished rows leave the
batch (``batch_select_indices``) so the cache only holds live rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache


def warp_logprobs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Log-probs [.., V] of the sampling distribution: softmax(logits / T), restricted to the
    top-k tokens and then to the smallest set whose mass reaches ``top_p``, renormalised."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs
        drop_sorted = mass_before >= top_p  # keeps at least the most likely token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.log_softmax(-1)


@dataclass
class SampleOutput:
    """Token-level result for ``R = B*n`` prompt-major rows."""

    tokens: torch.Tensor  # LongTensor[R, T], pad after a row finished
    mask: torch.Tensor  # LongTensor[R, T]
    logprobs: torch.Tensor  # FloatTensor[R, T], 0 on padding
    finish_reasons: list[str]  # "eos" | "stop" | "length"
    distributions: torch.Tensor | None = None  # FloatTensor[R, T, V] (keep_distributions), 0 on padding


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded mask: 0 at the first real token (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def sample_shared_prefix(model: torch.nn.Module, prefill: dict, attention_mask: torch.Tensor, *, n: int,
                         max_new_tokens: int, eos_ids: set[int], pad_id: int, temperature: float = 1.0,
                         top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
                         stop_check: Callable[[int, list[int]], bool] | None = None,
                         generator: torch.Generator | None = None, keep_distributions: bool = False) -> SampleOutput:
    """Sample ``n`` continuations of each of the ``B`` left-padded prompts in ``prefill``.

    ``prefill`` holds ``input_ids`` (or ``inputs_embeds`` for multimodal prefixes) of shape [B, P];
    ``stop_check(row, tokens_so_far)`` says whether a row just produced a stop string.
    Greedy rows report the model's own (temperature 1) log-prob of each chosen token.
    ``keep_distributions`` also returns each step's whole (warped) log-distribution, [R, T, V],
    zeros after a row ends.
    """
    greedy = greedy or temperature == 0
    device = attention_mask.device
    batch = attention_mask.shape[0]
    rows = batch * n
    positions = positions_from_mask(attention_mask)
    cache = DynamicCache(config=model.config)
    out = model(**prefill, attention_mask=attention_mask, position_ids=positions, cache=cache,
                use_cache=True, logits_to_keep=1)
    cache = out.cache
    logits = out.logits[:, -1].float()
    mask = attention_mask
    next_pos = positions[:, -1:] + 1
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, 0)
        mask = mask.repeat_interleave(n, 0)
        next_pos = next_pos.repeat_interleave(n, 0)

    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    out_mask = torch.zeros((rows, max_new_tokens), dtype=torch.long, device=device)
    logprobs = torch.zeros((rows, max_new_tokens), dtype=torch.float32, device=device)
    dists = torch.zeros((rows, max_new_tokens, logits.shape[-1]), device=device) if keep_distributions else None
    reasons = ["length"] * rows
    alive = torch.arange(rows, device=device)  # global row index of each live cache row
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    steps = 0
    for t in range(max_new_tokens):
        steps = t + 1
        if greedy:
            warped = logits.log_softmax(-1)
            tok = logits.argmax(-1)
        else:
            warped = warp_logprobs(logits, temperature, top_k, top_p)
            tok = torch.multinomial(warped.exp(), 1, generator=generator).squeeze(-1)
        logp = warped.gather(-1, tok[:, None]).squeeze(-1)
        if dists is not None:
            dists[alive, t] = warped
        tokens[alive, t] = tok
        logprobs[alive, t] = logp
        out_mask[alive, t] = 1
        done = torch.isin(tok, eos) if eos.numel() else torch.zeros_like(tok, dtype=torch.bool)
        for i in done.nonzero().flatten().tolist():
            reasons[int(alive[i])] = "eos"
        if stop_check is not None:
            for i in (~done).nonzero().flatten().tolist():
                row = int(alive[i])
                if stop_check(row, tokens[row, : t + 1].tolist()):
                    reasons[row] = "stop"
                    done[i] = True
        if t == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().flatten()
            cache.batch_select_indices(keep)
            alive, tok, mask, next_pos = alive[keep], tok[keep], mask[keep], next_pos[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, cache=cache,
                    use_cache=True)
        cache = out.cache
        logits = out.logits[:, -1].float()
        next_pos = next_pos + 1
    return SampleOutput(tokens=tokens[:, :steps], mask=out_mask[:, :steps], logprobs=logprobs[:, :steps],
                        finish_reasons=reasons, distributions=dists[:, :steps] if dists is not None else None)
