"""The learning-rate schedule of every recipe: one factory over ``transformers.get_scheduler``.

Names and what step ``s`` (0-based, the ``s``-th optimizer step) trains at, for base rate ``lr``,
``W`` warm-up steps and ``T`` steps in all:

* ``constant``: ``lr * (s + 1) / W`` while ``s < W``, then ``lr``;
* ``linear``: the same warm-up, then ``lr * (1 - (s - W) / (T - W))``, down to 0 after the last step;
* ``cosine``: the same warm-up, then a half cosine from ``lr`` to ``min_lr_ratio * lr``, reached at
  the last step (``get_scheduler("cosine_warmup_with_min_lr")``).

Warm-up starts at ``lr / W``, not at 0, so no step is spent at a zero learning rate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "linear", "cosine")


def linear_warmup_factors(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The factor of step ``s`` for ``constant`` (with warm-up) and ``linear``, as align has always used.

    Why not ``get_scheduler``: its warm-up gives ``s / W`` (step 0 trains at 0, where this gives
    ``1 / W``), and its linear decay computes ``(T - s) / (T - W)``, which rounds differently from
    ``1 - (s - W) / (T - W)`` in about 40% of the steps. The align runs on record (the reproduction
    study) were trained with exactly these factors, so they stay bit for bit.
    """
    w, t = warmup_steps, total_steps

    def factor(step: int) -> float:
        if w and step < w:
            return (step + 1) / w
        if schedule == "linear":
            return max(0.0, 1.0 - (step - w) / max(1, t - w))
        return 1.0

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, *, warmup_steps: int, total_steps: int,
                   min_lr_ratio: float = 0.0) -> LambdaLR:
    """A ``LambdaLR`` over ``optimizer`` (every parameter group) for the schedule named ``schedule``.

    Step it once after each optimizer step; its ``state_dict`` goes into the checkpoint.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if schedule == "linear" or (schedule == "constant" and warmup_steps):
        return LambdaLR(optimizer, linear_warmup_factors(schedule, warmup_steps, total_steps))
    from transformers import get_scheduler  # here: importing transformers takes seconds

    if schedule == "constant":
        return get_scheduler("constant", optimizer)
    return get_scheduler("cosine_warmup_with_min_lr", optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=total_steps, scheduler_specific_kwargs={"min_lr_rate": min_lr_ratio})


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler: LambdaLR) -> float:
    """Apply the gradients at the scheduled rate, advance the schedule and clear the gradients;
    returns the rate the step used (that of the first parameter group)."""
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lr
