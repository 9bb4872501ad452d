"""Projectors from encoder width into the LM's embedding space: ``linear`` (PaliGemma,
Qwen2-Audio) or ``mlp`` = Linear-GELU-Linear (LLaVA)."""

from __future__ import annotations

from torch import nn

from mmalign.errors import ConfigError

PROJECTORS = ("linear", "mlp")


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ConfigError(f"projector: must be one of {', '.join(PROJECTORS)}; got '{kind}'")
