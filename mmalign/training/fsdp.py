"""FSDP2 shards (torch's ``DTensor``) gathered into full tensors, and full tensors sharded back.

What the checkpoint format needs to save and restore a model that FSDP2 sharded in place: every
function here is a collective when a process group runs, so every process calls it, in the same
order. Without torch.distributed (one process) they return their input unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def dtensor_type() -> type | None:
    """torch's DTensor class (what FSDP2 shards are) while torch.distributed runs, else None."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def full_tensors(obj: Any, dtensor: type | None = None) -> Any:
    """``obj`` (a tensor, or dicts / lists / tuples of them) with every shard gathered into its
    full tensor (detached), on every process."""
    dtensor = dtensor or dtensor_type()
    if dtensor is None:
        return obj
    if isinstance(obj, dtensor):
        return obj.detach().full_tensor()
    if isinstance(obj, dict):
        return {k: full_tensors(v, dtensor) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(full_tensors(v, dtensor) for v in obj)
    return obj


def is_sharded(params: Iterable[torch.Tensor]) -> bool:
    """Whether any of ``params`` is an FSDP2 shard."""
    dtensor = dtensor_type()
    return dtensor is not None and any(isinstance(p, dtensor) for p in params)


def shard_like(full: torch.Tensor, like: Any) -> Any:
    """``full`` distributed as the shard ``like`` is (its mesh and placements); this process keeps its part."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)


def copy_into_shards(params: list[torch.Tensor], full: list[torch.Tensor]) -> None:
    """Each sharded parameter takes its part of the matching full tensor."""
    with torch.no_grad():
        for p, t in zip(params, full, strict=True):
            p.copy_(shard_like(t, p))


def shard_optimizer_state(optimizer: Any) -> None:
    """Optimizer moments loaded as full tensors (``exp_avg``, ``exp_avg_sq``) become shards of
    their sharded parameters; scalars such as the step counter stay as they are."""
    from torch.distributed.tensor import DTensor

    for p, moments in getattr(optimizer, "optimizer", optimizer).state.items():
        for key, v in moments.items():
            if isinstance(p, DTensor) and torch.is_tensor(v) and not isinstance(v, DTensor) and v.shape == p.shape:
                moments[key] = shard_like(v, p)
