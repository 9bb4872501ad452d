"""Best-of-N and worst-of-N: sample N responses per prompt, score them with a reward, keep the
argmax (or argmin). Ties go to the lowest candidate index, so the choice is deterministic."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mmalign.errors import UserError
from mmalign.models.policy import Policy, Prompt, Samples, as_prompt
from mmalign.rewards.base import as_reward


@dataclass
class Choice:
    """The chosen response to one prompt, with every candidate and its reward."""

    prompt: str
    response: str
    index: int
    reward: float
    candidates: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "response": self.response, "index": self.index, "reward": self.reward,
                "candidates": self.candidates, "rewards": self.rewards, "finish_reasons": self.finish_reasons}


def select(rewards: torch.Tensor, mode: str = "best") -> torch.Tensor:
    """Index [B] of the max (``best``) or min (``worst``) of each row of ``rewards`` [B, N];
    ties go to the lowest index."""
    if mode not in ("best", "worst"):
        raise ValueError(f"mode must be 'best' or 'worst', got {mode!r}")
    target = rewards.max(-1, keepdim=True).values if mode == "best" else rewards.min(-1, keepdim=True).values
    hits = (rewards == target).long()
    return hits.argmax(-1)  # first index where the extreme is attained


def score_responses(reward: Callable[..., Any], prompts: Sequence[str | Prompt], responses: Sequence[str], *,
                    batch_size: int = 64) -> torch.Tensor:
    """Rewards [R] of (prompt, response) rows, scored in batches of ``batch_size``."""
    scorer = as_reward(reward)
    texts = [as_prompt(p).text for p in prompts]
    media = [as_prompt(p).media for p in prompts]
    with_media = any(media)
    out = []
    for start in range(0, len(texts), batch_size):
        sl = slice(start, start + batch_size)
        out.append(scorer(texts[sl], list(responses[sl]), media[sl]) if with_media else scorer(texts[sl], list(responses[sl])))
    return torch.cat(out) if out else torch.zeros(0)


def choose(samples: Samples, rewards: torch.Tensor, mode: str = "best") -> list[Choice]:
    """Group ``samples`` by prompt, pick per prompt by ``mode``."""
    n = samples.n
    grid = rewards.reshape(-1, n)
    picks = select(grid, mode)
    choices = []
    for i, prompt in enumerate(samples.prompts):
        rows = range(i * n, (i + 1) * n)
        j = int(picks[i])
        choices.append(Choice(prompt=prompt.text, response=samples.texts[i * n + j], index=j,
                              reward=float(grid[i, j]), candidates=[samples.texts[r] for r in rows],
                              rewards=[float(x) for x in grid[i]],
                              finish_reasons=[samples.finish_reasons[r] for r in rows]))
    return choices


def best_of_n(policy: Policy, prompts: Sequence[str | Prompt], reward: Callable[..., Any], n: int, *,
              mode: str = "best", reward_batch_size: int = 64, **sampling: Any) -> list[Choice]:
    """Best-of-N (``mode='best'``) or worst-of-N (``'worst'``) decoding: one prefix-shared sampling
    call for all prompts, rewards scored in batches, one choice per prompt."""
    if n < 1:
        raise UserError(f"n must be >= 1, got {n}")
    samples = policy.sample(prompts, n, **sampling)
    rewards = score_responses(reward, [samples.prompts[int(i)] for i in samples.prompt_index], samples.texts,
                              batch_size=reward_batch_size)
    return choose(samples, rewards, mode)


def worst_of_n(policy: Policy, prompts: Sequence[str | Prompt], reward: Callable[..., Any], n: int,
               **kwargs: Any) -> list[Choice]:
    """Worst-of-N: the argmin-reward candidate per prompt (ties to the lowest index)."""
    return best_of_n(policy, prompts, reward, n, mode="worst", **kwargs)
