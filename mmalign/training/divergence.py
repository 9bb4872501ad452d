"""Divergence checks of every training loop: a non-finite loss, gradient norm or weight stops the run.

Call :func:`clip_and_check` (or :func:`check_finite`) after ``backward()`` and before
``optimizer.step()``, so the weights (and every checkpoint written so far) stay those of the last
good step, and :func:`check_finite_weights` before saving a checkpoint. Both raise :class:`mmalign.errors.DivergenceError`, a one-line user
error naming the step and what to change; the run gets no DONE marker and stays resumable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from mmalign.errors import DivergenceError


def lr_hint(key: str, lr: float) -> str:
    """The usual advice: a smaller learning rate, and what happened to the checkpoints."""
    return f"lower {key} (now {lr:g}) and rerun with --overwrite (checkpoints from before this step are kept)"


def check_finite(recipe: str, step: int, hint: str, **values: float | torch.Tensor) -> None:
    """Raise if any of ``values`` (e.g. ``loss=..., grad_norm=...``) is NaN or infinite."""
    for name, value in values.items():
        number = float(value)
        if not math.isfinite(number):
            raise DivergenceError(recipe, step, name.replace("_", " "), number, hint)


def check_finite_weights(recipe: str, step: int, hint: str, params: Iterable[torch.Tensor]) -> None:
    """Raise if any parameter holds a NaN or infinite value (one device sync per device)."""
    with torch.no_grad():
        flags: dict[torch.device, list[torch.Tensor]] = {}
        for p in params:
            flags.setdefault(p.device, []).append(torch.isfinite(p).all())
        if not all(bool(torch.stack(f).all()) for f in flags.values()):
            raise DivergenceError(recipe, step, "a weight", None, hint)


def clip_and_check(recipe: str, step: int, hint: str, params: Sequence[torch.Tensor], max_norm: float,
                   loss: float | torch.Tensor) -> torch.Tensor:
    """Clip the gradients of ``params`` to norm ``max_norm`` (0: only measure it) and raise, before
    the optimizer step, if ``loss`` or the norm is not finite; returns the norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm or math.inf)
    check_finite(recipe, step, hint, loss=loss, gradient_norm=grad_norm)
    return grad_norm
