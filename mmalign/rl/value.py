r"""Value models :math:`V(s_t)` for PPO with GAE: one value per response position ``t``, the value
of the state *before* response token ``t`` is emitted.

``forward(batch: SequenceBatch) -> Tensor[R, T]`` is all the trainer uses.
"""

from __future__ import annotations

import torch
from torch import nn

from mmalign.models.policy import SequenceBatch


class TableValue(nn.Module):
    """One value per prompt id (the bandit's states), broadcast over response positions."""

    def __init__(self, num_prompts: int) -> None:
        super().__init__()
        self.values = nn.Parameter(torch.zeros(num_prompts))

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        v = self.values[batch.prompt_ids[:, -1]]
        return v.unsqueeze(1).expand(-1, batch.response_ids.shape[1])


class CausalLMValue(nn.Module):
    """A transformer backbone (a separate copy of the policy's base model) plus a linear head,
    zero-initialised so the first values are 0."""

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32) -> CausalLMValue:
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(path, dtype=dtype)
        return cls(backbone, backbone.config.hidden_size)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
        hidden = self.backbone(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        P, T = batch.prompt_ids.shape[1], batch.response_ids.shape[1]
        # the hidden state at position P-1+t has seen the prompt and response tokens < t
        values = self.head(hidden[:, P - 1:P - 1 + T].float()).squeeze(-1)
        return values * batch.response_mask.to(values.dtype)
