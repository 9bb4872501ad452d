"""Multimodal supervised fine-tuning in LLaVA's two stages, on any Policy.

* ``projector``: only the projectors train (encoders and LM frozen): aligns media features
  with the LM's embedding space;
* ``full``: the LM and the projectors train (encoders stay frozen);
* ``lora``: LoRA adapters on the LM plus the projectors.

:func:`sft` runs one stage (loss = mean negative log-likelihood of response tokens, EOS included);
:func:`answer_accuracy` greedily answers prompts and scores the answers with a reward.
Records are data-loader records (``prompt``, ``media``, ``response``, ``source``) or
``(prompt, response)`` pairs; nothing here depends on the modality.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from mmalign.errors import UserError
from mmalign.models.policy import Prompt, SourcedPrompt, to_prompt
from mmalign.utils.progress import progress

__all__ = ["STAGES", "SourcedPrompt", "answer_accuracy", "set_stage", "sft", "to_prompt"]

STAGES = ("projector", "full", "lora")


def _pairs(records: Sequence[Any]) -> list[tuple[Prompt, str]]:
    out = []
    for r in records:
        if isinstance(r, tuple):
            out.append((to_prompt(r[0]), r[1]))
        else:
            out.append((to_prompt(r), r.response))
    return out


def set_stage(policy: Any, stage: str, *, lora_r: int = 8, lora_alpha: float = 16.0,
              lora_targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> None:
    """Set which parameters of a multimodal policy train in ``stage`` (``lora`` first wraps the LM
    in LoRA adapters if it has none); the policy's :meth:`set_trainable` does the freezing."""
    if stage not in STAGES:
        raise UserError(f"sft stage must be one of {', '.join(STAGES)}; got '{stage}'")
    model = policy.model
    if stage == "lora" and not policy.is_peft:
        from peft import LoraConfig, get_peft_model

        model.lm = get_peft_model(model.lm, LoraConfig(r=lora_r, lora_alpha=lora_alpha,
                                                       target_modules=list(lora_targets), task_type="CAUSAL_LM"))
    policy.set_trainable("projector" if stage == "projector" else "all")


def sft(policy: Any, records: Sequence[Any], *, stage: str = "full", steps: int = 100, lr: float = 1e-3,
        batch_size: int = 8, max_grad_norm: float = 1.0, seed: int = 0) -> list[float]:
    """Train ``policy`` for ``steps`` on demonstrations; returns the loss of every step."""
    set_stage(policy, stage)
    params = policy.trainable_parameters()
    if not params:
        raise UserError(f"sft stage '{stage}' has no trainable parameters")
    pairs = _pairs(records)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    order: list[int] = []
    losses = []
    policy.train()
    for _ in progress(range(steps), desc=f"sft ({stage})"):
        if len(order) < batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        idx, order = order[:batch_size], order[batch_size:]
        batch = policy.encode([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], add_eos=True)
        logp = policy.score(batch)
        loss = -logp.sum() / batch.response_mask.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
    policy.eval()
    return losses


@torch.no_grad()
def answer_accuracy(policy: Any, records: Sequence[Any], reward: Any, *, batch_size: int = 32,
                    max_new_tokens: int = 8) -> float:
    """Mean reward of greedy answers (a 0/1 answer-checking reward gives accuracy)."""
    prompts = [to_prompt(r) for r in records]
    total = 0.0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        s = policy.sample(chunk, n=1, max_new_tokens=max_new_tokens, greedy=True)
        total += float(reward([p.text for p in chunk], s.texts, [p.media for p in chunk]).sum())
    return total / max(1, len(prompts))
