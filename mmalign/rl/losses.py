r"""Policy-gradient and value losses.

Clipped surrogate (PPO, Schulman et al. 2017) per token, with :math:`\rho_t = \pi_\theta/\pi_{old}`:

.. math:: L^{clip}_t = -\min\big(\rho_t A_t,\; \operatorname{clip}(\rho_t, 1-\epsilon, 1+\epsilon) A_t\big)

Clipped value loss: :math:`\tfrac12\max\big((V-R)^2, (V_{old} + \operatorname{clip}(V - V_{old},
-\epsilon_v, \epsilon_v) - R)^2\big)`.

Aggregation over a ``[R, T]`` token grid (``loss_agg``):

* ``seq_sum``: :math:`\frac1{R\,T_{max}}\sum_{i,t} L_{it}` -- the sum over a sequence's tokens
  (the unbiased sequence-level policy gradient) divided by a constant, as in Dr. GRPO;
* ``token_mean``: the mean over all valid tokens of the batch.
"""

from __future__ import annotations

import torch

LOSS_AGGS = ("seq_sum", "token_mean")


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str = "seq_sum") -> torch.Tensor:
    """Reduce a per-token loss ``[R, T]`` to a scalar over the valid positions of ``mask``."""
    m = mask.to(per_token.dtype)
    if how == "seq_sum":
        return (per_token * m).sum() / (per_token.shape[0] * max(per_token.shape[1], 1))
    if how == "token_mean":
        return (per_token * m).sum() / m.sum().clamp_min(1.0)
    raise ValueError(f"unknown loss aggregation '{how}'")


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped policy loss and a per-token 'was clipped' indicator."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).to(logp.dtype)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> torch.Tensor:
    """Per-token clipped value loss."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns).square(), (v_clipped - returns).square())
