r"""Calibrated rewards: a reward's quantile among reference-policy samples for the same prompt.

.. math::  c(x, y) = P_{z\sim\pi_{ref}(\cdot|x)}\big(r(x,z) < r(x,y)\big)
                   + \tfrac12\, P_{z\sim\pi_{ref}(\cdot|x)}\big(r(x,z) = r(x,y)\big)

Empirically, with K reference rewards :math:`z_1..z_K` for the prompt,
:math:`\hat c = (\#\{z_k < r\} + \#\{z_k \le r\}) / 2K`: sort the references once and count with
``searchsorted`` on the left and on the right, :math:`O((K+M)\log K)` per prompt for M candidates,
batched over prompts on any device. Prompts may have different K (ragged).

:class:`CalibrationStore` keeps reference rewards on disk, keyed by prompt content, so they are
sampled and scored once and reused across runs; it is invalidated when the reference policy or
the reward changes (their fingerprints).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mmalign.errors import DataError
from mmalign.utils.atomic import atomic_write_bytes

Rewards = torch.Tensor | Sequence[torch.Tensor]
Media = bytes | bytearray | memoryview | str | os.PathLike


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


# ------------------------------------------------------------------------------------------
# store
# ------------------------------------------------------------------------------------------


def _media_digest(item: Media) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(item)).digest()
    path = Path(item)
    try:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.digest()
    except OSError as exc:
        raise DataError(f"{path}: cannot read media file for the calibration key ({exc.strerror})") from None


def prompt_key(text: str, media: Sequence[Media] | None = None) -> str:
    """sha256 of the prompt text and its media (bytes are hashed; str/paths name files to hash)."""
    h = hashlib.sha256()
    h.update(b"text\0")
    h.update(hashlib.sha256(text.encode("utf-8")).digest())
    for item in media or ():
        h.update(b"media\0")
        h.update(_media_digest(item))
    return h.hexdigest()


class CalibrationStore:
    """Reference rewards per prompt on disk (safetensors, written atomically).

    Opened with the fingerprints of the reference policy and of the reward (strings the caller
    builds, e.g. model name + revision + sampling settings). A file written under other
    fingerprints is stale: every lookup misses and :meth:`save` replaces it.
    """

    FORMAT = "mmalign.calibration/1"

    def __init__(self, path: str | Path, *, policy_fingerprint: str, reward_fingerprint: str) -> None:
        self.path = Path(path)
        self.policy_fingerprint = str(policy_fingerprint)
        self.reward_fingerprint = str(reward_fingerprint)
        self._entries: dict[str, torch.Tensor] = {}
        self.stale = False  # True when an existing file had other fingerprints
        if self.path.exists():
            self._load()

    # -- persistence -----------------------------------------------------------------------
    def _load(self) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != self.FORMAT:
                    raise DataError(f"{self.path}: not a calibration store (format {meta.get('format')!r})")
                if (meta.get("policy_fingerprint") != self.policy_fingerprint
                        or meta.get("reward_fingerprint") != self.reward_fingerprint):
                    self.stale = True
                    return
                keys, offsets, values = (fh.get_tensor(n) for n in ("keys", "offsets", "values"))
        except DataError:
            raise
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise DataError(f"{self.path}: unreadable calibration store ({exc})") from None
        for i in range(keys.shape[0]):
            self._entries[bytes(keys[i].tolist()).hex()] = values[offsets[i]: offsets[i + 1]].clone()

    def save(self) -> None:
        """Write every entry (under the current fingerprints) atomically."""
        from safetensors.torch import save

        keys = list(self._entries)
        lens = torch.tensor([0] + [len(self._entries[k]) for k in keys], dtype=torch.int64)
        tensors = {
            "keys": torch.tensor([list(bytes.fromhex(k)) for k in keys], dtype=torch.uint8).reshape(-1, 32),
            "offsets": torch.cumsum(lens, 0),
            "values": (torch.cat([self._entries[k] for k in keys]) if keys
                       else torch.empty(0, dtype=torch.float64)),
        }
        meta = {"format": self.FORMAT, "policy_fingerprint": self.policy_fingerprint,
                "reward_fingerprint": self.reward_fingerprint}
        atomic_write_bytes(self.path, save(tensors, metadata=meta))
        self.stale = False

    # -- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, text: str, media: Sequence[Media] | None = None) -> torch.Tensor | None:
        """The stored reference rewards of the prompt, or None (a miss)."""
        found = self._entries.get(prompt_key(text, media))
        return None if found is None else found.clone()

    def put(self, text: str, rewards: torch.Tensor | Sequence[float],
            media: Sequence[Media] | None = None) -> str:
        """Store the reference rewards of one prompt (replacing any); returns its key."""
        values = torch.as_tensor(rewards).detach().to("cpu", torch.float64).reshape(-1)
        if values.numel() == 0:
            raise DataError("cannot store an empty set of reference rewards (K = 0)")
        if not bool(torch.isfinite(values).all()):
            raise DataError("reference rewards to store contain NaN or inf")
        key = prompt_key(text, media)
        self._entries[key] = values.clone()
        return key

    def lookup(self, texts: Sequence[str], media: Sequence[Sequence[Media] | None] | None = None,
               ) -> tuple[list[torch.Tensor | None], list[int]]:
        """Stored rewards for each prompt (None where missing) and the indices of the misses."""
        if media is not None and len(media) != len(texts):
            raise DataError(f"got {len(texts)} prompts but media for {len(media)}")
        found = [self.get(t, None if media is None else media[i]) for i, t in enumerate(texts)]
        return found, [i for i, f in enumerate(found) if f is None]
