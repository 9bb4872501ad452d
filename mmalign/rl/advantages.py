r"""Advantage estimators. Rows are prompt-major: rows ``i*n .. i*n+n-1`` share prompt ``i``.

* **RLOO** (Kool et al. 2019; Ahmadian et al. 2024): the leave-one-out baseline over the ``n``
  samples of a prompt,

  .. math:: A_i = s_i - \frac{1}{n-1}\sum_{j\neq i} s_j = \frac{n}{n-1}\,(s_i - \bar s).

* **group_norm** (GRPO, Shao et al. 2024): :math:`A_i = (s_i - \bar s) / (\sigma_s + \epsilon)`.

* **GAE** (Schulman et al. 2016) from per-token rewards :math:`r_t` and values :math:`V_t`:

  .. math:: \delta_t = r_t + \gamma V_{t+1} - V_t, \qquad A_t = \sum_{l\ge 0} (\gamma\lambda)^l \delta_{t+l},

  with :math:`V` of the state after the last token taken as 0; returns are :math:`A_t + V_t`.
"""

from __future__ import annotations

import torch

ESTIMATORS = ("rloo", "group_norm", "gae")


def rloo(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Leave-one-out advantages of scores ``[R]`` or ``[R, T]`` (``R = prompts * n``, ``n >= 2``);
    for ``[R, T]`` each position ``t`` gets its own leave-one-out baseline."""
    if n < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    s = scores.reshape(-1, n, *scores.shape[1:])
    return (n / (n - 1) * (s - s.mean(dim=1, keepdim=True))).reshape(scores.shape)


def group_norm(scores: torch.Tensor, n: int, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised advantages of sequence scores ``[R]``."""
    s = scores.view(-1, n)
    std = s.std(dim=1, keepdim=True, unbiased=n > 1) if n > 1 else torch.ones_like(s[:, :1])
    return ((s - s.mean(dim=1, keepdim=True)) / (std + eps)).reshape(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over right-padded token sequences ``[R, T]``; returns ``(advantages, returns)``.

    Padding positions (``mask == 0``) get zero advantage and do not carry value across.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean) over the valid positions of ``mask``."""
    m = mask.to(x.dtype)
    count = m.sum().clamp_min(1.0)
    mean = (x * m).sum() / count
    var = ((x - mean).square() * m).sum() / count
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m
