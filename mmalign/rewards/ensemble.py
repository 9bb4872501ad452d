"""``kind: ensemble``: a weighted sum of other rewards, ``sum_i w_i * r_i(x, y)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmalign.rewards.base import Reward, check_batch, stable_hash, to_scores


class EnsembleReward:
    """Weighted sum of component rewards (deterministic if all components are)."""

    def __init__(self, components: Sequence[Reward], weights: Sequence[float]) -> None:
        if len(components) != len(weights) or not components:
            raise ValueError("an ensemble needs one weight per component and at least one component")
        self.components = list(components)
        self.weights = [float(w) for w in weights]
        self.deterministic = all(getattr(c, "deterministic", False) for c in self.components)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 media: Sequence[list] | None = None) -> torch.Tensor:
        check_batch(prompts, responses, media)
        total = torch.zeros(len(prompts), dtype=torch.float32)
        for w, reward in zip(self.weights, self.components):
            total += w * reward(prompts, responses, media)
        return to_scores(total, len(prompts), source="ensemble reward")

    def fingerprint(self) -> str:
        return stable_hash({"kind": "ensemble", "parts": [[w, c.fingerprint()] for w, c in
                                                          zip(self.weights, self.components)]})
