"""Reward-guided blockwise decoding (the "controlled decoding" family).

Every ``block_size`` tokens: sample ``num_candidates`` continuations of each prompt's current
prefix (one prefix-shared sampling call for all prompts), score prefix + continuation with the
reward, keep the best (ties to the lowest index), and go on from there until every response has
finished (EOS / stop string) or reached ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mmalign.decoding.bon import Choice, score_responses, select
from mmalign.errors import UserError
from mmalign.models.policy import Policy, Prompt, as_prompt


def blockwise_decode(policy: Policy, prompts: Sequence[str | Prompt], reward: Callable[..., Any], *,
                     block_size: int = 8, num_candidates: int = 4, max_new_tokens: int = 32,
                     reward_batch_size: int = 64, **sampling: Any) -> list[Choice]:
    """Decode each prompt block by block, keeping the highest-reward block each time.

    The returned :class:`Choice` lists the last block's candidates (full responses) and rewards.
    The policy's ``sample`` must accept ``response_prefix`` (token ids to continue from).
    """
    if block_size < 1 or num_candidates < 1 or max_new_tokens < 1:
        raise UserError("blockwise decoding needs block_size, num_candidates and max_new_tokens >= 1")
    prompts = [as_prompt(p) for p in prompts]
    n = num_candidates
    prefix: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    choices: list[Choice | None] = [None] * len(prompts)
    while not all(done):
        active = [i for i, d in enumerate(done) if not d]
        steps = min(block_size, max_new_tokens - len(prefix[active[0]]))
        try:
            s = policy.sample([prompts[i] for i in active], n, max_new_tokens=steps,
                              response_prefix=[prefix[i] for i in active], **sampling)
        except TypeError as exc:
            raise UserError(f"this policy cannot continue partial responses (blockwise decoding): {exc}") from None
        so_far = [policy.decode(prefix[i]) for i in active]
        full = [so_far[r // n] + s.texts[r] for r in range(len(s.texts))]
        rewards = score_responses(reward, [prompts[active[r // n]] for r in range(len(full))], full,
                                  batch_size=reward_batch_size).reshape(-1, n)
        picks = select(rewards, "best")
        for k, i in enumerate(active):
            j = int(picks[k])
            row = k * n + j
            prefix[i] = prefix[i] + s.response_ids[row][s.response_mask[row].bool()].tolist()
            reason = s.finish_reasons[row]
            choices[i] = Choice(prompt=prompts[i].text, response=full[row], index=j, reward=float(rewards[k, j]),
                                candidates=full[k * n:(k + 1) * n], rewards=[float(x) for x in rewards[k]],
                                finish_reasons=s.finish_reasons[k * n:(k + 1) * n])
            if reason != "length" or len(prefix[i]) >= max_new_tokens:
                done[i] = True
    return [c for c in choices if c is not None]
