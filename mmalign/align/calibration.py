r"""Calibrated rewards: a reward's quantile among reference-policy samples for the same prompt.

.. math::  c(x, y) = P_{z\sim\pi_{ref}(\cdot|x)}\big(r(x,z) < r(x,y)\big)
                   + \tfrac12\, P_{z\sim\pi_{ref}(\cdot|x)}\big(r(x,z) = r(x,y)\big)

Empirically, with K reference rewards :math:`z_1..z_K` for the prompt,
:math:`\hat c = (\#\{z_k < r\} + \#\{z_k \le r\}) / 2K`: sort the references once and count with
``searchsorted`` on the left and on the right, :math:`O((K+M)\log K)` per prompt for M candidates,
batched over prompts on any device. Prompts may have different K (ragged).

Pure math on tensors. The on-disk store of reference rewards (file I/O) is
:class:`mmalign.rl.calibration_store.CalibrationStore`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmalign.errors import DataError

Rewards = torch.Tensor | Sequence[torch.Tensor]


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _as_1d(values: torch.Tensor | Sequence[float], what: str, i: int) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.dim() != 1:
        raise DataError(f"{what} of prompt {i} must be 1-D, got shape {tuple(t.shape)}")
    return t


def _padded_references(ref: Rewards, lengths: torch.Tensor | Sequence[int] | None,
                       dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference rewards as a [B, K] tensor padded with +inf, and the true lengths [B]."""
    if isinstance(ref, torch.Tensor):
        if ref.dim() != 2:
            raise DataError(f"reference rewards must be [prompts, K] (or a list of 1-D tensors), got shape {tuple(ref.shape)}")
        b, k = ref.shape
        if lengths is None:
            lens = torch.full((b,), k, dtype=torch.long, device=ref.device)
        else:
            lens = torch.as_tensor(lengths, dtype=torch.long, device=ref.device)
            if lens.shape != (b,):
                raise DataError(f"reference lengths must have one entry per prompt ({b}), got shape {tuple(lens.shape)}")
            over = (lens > k).nonzero()
            if len(over):
                i = int(over[0])
                raise DataError(f"reference length {int(lens[i])} of prompt {i} exceeds the padded width {k}")
        valid = torch.arange(k, device=ref.device)[None, :] < lens[:, None]
        padded = ref
    else:
        if lengths is not None:
            raise DataError("reference lengths are only used with a padded reference tensor")
        rows = [_as_1d(r, "reference rewards", i) for i, r in enumerate(ref)]
        if not rows:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
        lens = torch.tensor([len(r) for r in rows], dtype=torch.long, device=rows[0].device)
        common = _float_dtype(*rows)
        padded = torch.nn.utils.rnn.pad_sequence([r.to(common) for r in rows], batch_first=True,
                                                 padding_value=float("inf"))
        valid = torch.arange(padded.shape[1], device=padded.device)[None, :] < lens[:, None]
    empty = (lens <= 0).nonzero()
    if len(empty):
        raise DataError(f"prompt {int(empty[0])} has no reference rewards (K = 0); calibration needs K >= 1")
    bad = (valid & ~torch.isfinite(padded)).any(dim=1).nonzero()
    if len(bad):
        raise DataError(f"reference rewards of prompt {int(bad[0])} contain NaN or inf")
    padded = padded.to(dtype or _float_dtype(padded))
    padded = torch.where(valid, padded, torch.full_like(padded, float("inf")))
    return padded, lens.to(padded.device)


def calibrate(ref_rewards: Rewards, rewards: Rewards,
              ref_lengths: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor | list[torch.Tensor]:
    r"""Calibrated rewards :math:`\hat c = (\#\{z < r\} + \#\{z \le r\}) / 2K` per prompt.

    ``ref_rewards``: a list of 1-D tensors (one per prompt, K may differ) or a [B, K] tensor with
    optional ``ref_lengths`` [B] (entries past a prompt's length are ignored). ``rewards``: a
    [B, M] tensor or a list of 1-D tensors (the candidates to calibrate). Returns the same form
    as ``rewards``, values in [0, 1]. NaN/inf, K = 0 or mismatched shapes raise
    :class:`~mmalign.errors.DataError` naming the prompt.
    """
    as_list = not isinstance(rewards, torch.Tensor)
    if as_list:
        cand_rows = [_as_1d(r, "rewards", i) for i, r in enumerate(rewards)]
    else:
        if rewards.dim() != 2:
            raise DataError(f"rewards must be [prompts, M] (or a list of 1-D tensors), got shape {tuple(rewards.shape)}")
        cand_rows = list(rewards)
    n_ref = ref_rewards.shape[0] if isinstance(ref_rewards, torch.Tensor) else len(ref_rewards)
    if n_ref != len(cand_rows):
        raise DataError(f"got reference rewards for {n_ref} prompts but rewards for {len(cand_rows)}")
    if not cand_rows:
        return [] if as_list else torch.empty(0, 0)
    for i, r in enumerate(cand_rows):
        if not bool(torch.isfinite(r).all()):
            raise DataError(f"rewards of prompt {i} contain NaN or inf")

    if as_list:
        dtype = _float_dtype(*cand_rows)
        cand = torch.nn.utils.rnn.pad_sequence([r.to(dtype) for r in cand_rows], batch_first=True)
    else:
        cand = rewards
    ref_dtype = ref_rewards.dtype if isinstance(ref_rewards, torch.Tensor) else _float_dtype(
        *[torch.as_tensor(r) for r in ref_rewards])
    dtype = _float_dtype(cand, torch.empty(0, dtype=ref_dtype))
    ref, lens = _padded_references(ref_rewards, ref_lengths, dtype)
    cand = cand.to(device=ref.device, dtype=dtype).contiguous()
    sorted_ref = ref.sort(dim=1).values.contiguous()
    below = torch.searchsorted(sorted_ref, cand, right=False)  # #{z < r}  (+inf padding never counts)
    at_or_below = torch.searchsorted(sorted_ref, cand, right=True)  # #{z <= r}
    out = (below + at_or_below).to(dtype) / (2.0 * lens[:, None].to(dtype))
    if as_list:
        return [out[i, : len(r)] for i, r in enumerate(cand_rows)]
    return out
