r"""The score the RL step maximises, from raw rewards: CTRL's calibrate-then-transform, BOND's
log-ratio, or the raw reward itself.

With K reference rewards :math:`z_1..z_K` of prompt x (:func:`mmalign.align.calibrate`),

.. math::  \hat c(x, y) = \big(\#\{z_k < r(x,y)\} + \#\{z_k \le r(x,y)\}\big) / 2K .

* **CTRL** (InfAlign): :math:`s(x, y) = \Phi(\hat c(x, y))` for a transform :math:`\Phi`
  (:mod:`mmalign.align.transforms`). For :math:`\Phi = \log` the calibrated reward is floored at
  :math:`1/2K`, the smallest value :math:`\hat c` takes above 0, so the score stays finite.
* **BOND** (best-of-N distillation): for continuous rewards the best-of-N policy of the reference
  is :math:`\pi_{BoN}(y|x) = \pi_{ref}(y|x)\, N\, c(x,y)^{N-1}`, so the log-ratio its backward KL
  rewards is :math:`\log\pi_{BoN}/\pi_{ref} = \log N + (N-1)\log c`. The constant :math:`\log N`
  moves no gradient and is dropped: :math:`s = (N-1)\log\max(\hat c, 1/2K)`.
* **Standard RLHF** (no transform, no BOND): :math:`s = r`.

Pure functions on tensors; rows are prompt-major (the ``n`` samples of a prompt are consecutive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from mmalign.align.calibration import calibrate
from mmalign.align.transforms import Transform
from mmalign.errors import DataError


class Scores(NamedTuple):
    scores: torch.Tensor  # [R] float32: what the RL step maximises
    calibrated: torch.Tensor | None  # [R] float32 calibrated rewards (None without references)


def calibrated_rewards(ref_rewards: Sequence[torch.Tensor], rewards: torch.Tensor, n: int) -> torch.Tensor:
    r""":math:`\hat c` of flat rewards ``[B*n]`` (``n`` per prompt) against each of the B prompts'
    reference rewards (computed in float64, returned as float32)."""
    return torch.cat(calibrate(list(ref_rewards), list(rewards.double().view(-1, n)))).float()


def log_floor(calibrated: torch.Tensor, k: int) -> torch.Tensor:
    r""":math:`\max(\hat c, 1/2K)`: the calibrated reward kept away from 0 before a log."""
    return calibrated.clamp_min(0.5 / k)


def transformed(calibrated: torch.Tensor, transform: Transform, k: int) -> torch.Tensor:
    r"""CTRL's score :math:`\Phi(\hat c)` (``log`` on the floored :math:`\hat c`)."""
    c = log_floor(calibrated, k) if transform.name == "log" else calibrated
    return torch.as_tensor(transform(c), dtype=torch.float32)


def bond_log_ratio(calibrated: torch.Tensor, n: int, k: int) -> torch.Tensor:
    r"""BOND's score :math:`(N-1)\log\max(\hat c, 1/2K)`: :math:`\log\pi_{BoN}/\pi_{ref}` less
    :math:`\log N`."""
    return (n - 1) * torch.log(log_floor(calibrated, k))


def score(rewards: torch.Tensor, ref_rewards: Sequence[torch.Tensor] | None, n: int, *,
          transform: Transform | None = None, bond_n: int | None = None) -> Scores:
    """The score of each of the flat ``rewards`` [B*n] and its calibrated reward.

    ``ref_rewards``: the B prompts' reference rewards, K each (None for the raw reward: no
    ``transform``, no ``bond_n``). ``bond_n`` selects BOND's log-ratio toward best-of-``bond_n``;
    else ``transform`` (None: the raw reward, calibrated for reporting only).
    """
    if ref_rewards is None:
        if transform is not None or bond_n is not None:
            raise ValueError("calibrated scores need the prompts' reference rewards")
        return Scores(rewards, None)
    lengths = {len(r) for r in ref_rewards}
    if len(lengths) > 1:
        raise DataError(f"every prompt needs the same number K of reference rewards, got {sorted(lengths)}")
    k = lengths.pop() if lengths else 1
    calibrated = calibrated_rewards(ref_rewards, rewards, n)
    if bond_n is not None:
        return Scores(bond_log_ratio(calibrated, bond_n, k), calibrated)
    if transform is None:
        return Scores(rewards, calibrated)
    return Scores(transformed(calibrated, transform, k), calibrated)
