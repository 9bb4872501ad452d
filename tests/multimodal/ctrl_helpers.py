"""A CTRL iteration written with the library's own pieces (calibration, transform, KL, RLOO,
clipped update), as the align recipe composes them; nothing here knows about modalities."""

from __future__ import annotations

import torch

from mmalign.align.calibration import calibrate
from mmalign.align.transforms import get_transform
from mmalign.decoding.bon import score_responses
from mmalign.rl.kl import kl_per_token
from mmalign.rl.step import Rollout, UpdateSettings, advantages_for, logprobs, update


def rewards_of(reward, samples) -> torch.Tensor:
    rows = [samples.prompts[int(i)] for i in samples.prompt_index]
    return score_responses(reward, rows, samples.texts).reshape(-1, samples.n)


def reference_rewards(reference, prompts, reward, k: int, **sampling) -> torch.Tensor:
    return rewards_of(reward, reference.sample(prompts, n=k, **sampling))


def ctrl_step(policy, reference, prompts, reward, ref_rewards, optimizer, *, n: int = 4, beta: float = 0.05,
              transform: str = "log", **sampling) -> dict[str, float]:
    """Sample n per prompt, calibrate against the reference rewards, Φ-transform, one update."""
    s = policy.sample(prompts, n=n, **sampling)
    calibrated = calibrate(ref_rewards, rewards_of(reward, s))  # [B, n] in [0, 1]
    phi = get_transform(transform)
    scores = torch.as_tensor(phi(calibrated.double().clamp(1e-3, 1.0))).float().flatten()
    mask = s.response_mask.float()
    old = logprobs(policy, s)
    ref = logprobs(reference, s)
    kl = kl_per_token(old, ref)
    settings = UpdateSettings(n=n)
    adv, _ = advantages_for(settings, scores, kl, mask, beta)
    rollout = Rollout(batch=s, mask=mask, old_logp=old, ref_logp=ref, kl=kl, advantages=adv)
    stats = update(policy, rollout, settings, beta=beta, optimizer=optimizer, params=policy.trainable_parameters())
    stats["calibrated"] = float(calibrated.mean())
    return stats
