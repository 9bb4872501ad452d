"""The run's :class:`accelerate.Accelerator`: the engine the launch asked for, or a one-line error.

accelerate shards (FSDP) and runs DeepSpeed only on accelerators: on CPU it runs the processes of
an FSDP or DeepSpeed launch as plain DDP over gloo (``MULTI_CPU``) without a word, so
:func:`make_accelerator` compares what the launch asked for (``ACCELERATE_USE_FSDP`` /
``ACCELERATE_USE_DEEPSPEED``, set by ``accelerate launch``) with what accelerate runs. See
docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, parse_flag_from_env

from mmalign.errors import UserError

ENGINES = {"ACCELERATE_USE_FSDP": DistributedType.FSDP, "ACCELERATE_USE_DEEPSPEED": DistributedType.DEEPSPEED}


def make_accelerator(*, cpu: bool, find_unused_parameters: bool = False,
                     not_with_fsdp: Sequence[str] = ()) -> Accelerator:
    """The Accelerator of a training run (``cpu``: stay on the CPU).

    ``find_unused_parameters``: DDP looks for parameters a step leaves without a gradient (a
    multimodal policy whose step has no prompt of some media kind). ``not_with_fsdp``: the
    settings of this run that FSDP cannot train (accelerate clips gradients under FSDP only when
    they are all of one prepared model's parameters); any of them under FSDP is a one-line error,
    as is a launch whose FSDP / DeepSpeed accelerate does not honour.
    """
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    accelerator = Accelerator(cpu=cpu, kwargs_handlers=handlers)
    kind = accelerator.distributed_type
    for flag, engine in ENGINES.items():
        if parse_flag_from_env(flag) and kind != engine:
            raise UserError(f"the accelerate launch asks for {engine.value} but accelerate runs {kind.value} here "
                            f"({engine.value} needs GPUs or other accelerators; on CPU use configs/accelerate/ddp.yaml, see docs/scaling.md)")
    if kind == DistributedType.FSDP and not_with_fsdp:
        raise UserError("FSDP trains the full weights of one model policy: accelerate clips gradients under FSDP only "
                        f"when they are all of one prepared model's parameters; not with {', '.join(not_with_fsdp)} "
                        "(use DDP or DeepSpeed)")
    return accelerator


def run_device(accelerator: Accelerator) -> torch.device:
    """Where this process loads the model: accelerate's device, without the index it gives every
    CPU process (``cpu:0``, which safetensors refuses)."""
    device = accelerator.device
    return torch.device("cpu") if device.type == "cpu" else device


def saving_is_collective(accelerator: Accelerator) -> bool:
    """Whether every process must call the final save (FSDP: each gathers, the main one writes)."""
    return accelerator.distributed_type == DistributedType.FSDP
