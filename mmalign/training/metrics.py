"""Metrics across processes: a step's metrics averaged over them, per-process weight checksums
(are the replicas in sync?), and lists gathered from all of them.

Each function is a collective under ``accelerate launch``: every process calls it, in the same
order. In one process they only convert (no communication, the values unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from accelerate.utils import gather_object

from mmalign.training.fsdp import full_tensors


def mean_over_processes(accelerator: Any, values: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    """``values`` (numbers or one-element tensors) as floats, each the mean over processes."""
    keys = sorted(values)
    vec = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        vec = accelerator.reduce(vec, reduction="mean")
    return dict(zip(keys, vec.tolist()))


def param_checksum(params: Sequence[torch.Tensor]) -> float:
    """A position-weighted sum of the full weights (FSDP2 shards gathered: a collective there):
    equal on two processes only if their weights are, practically."""
    params = full_tensors(list(params))
    with torch.no_grad():
        return float(sum((p.double() * (1.0 + torch.arange(p.numel(), dtype=torch.float64, device=p.device)
                                        .reshape(p.shape).remainder(7))).sum() for p in params))


def checksums_per_process(accelerator: Any, params: Sequence[torch.Tensor]) -> list[float]:
    """:func:`param_checksum` of every process, in process order."""
    sums = torch.tensor([param_checksum(params)], dtype=torch.float64, device=accelerator.device)
    return (accelerator.gather(sums) if accelerator.num_processes > 1 else sums).tolist()


def gather_lists(accelerator: Any, items: list[Any]) -> list[Any]:
    """Every process's ``items`` (picklable), concatenated in process order."""
    return gather_object(items) if accelerator.num_processes > 1 else items
