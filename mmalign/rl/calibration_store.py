r"""The calibration store: reference rewards per prompt on disk, so that the K reference rollouts
of a prompt are sampled and scored once and reused across runs.

Entries are keyed by prompt content (:func:`prompt_key`: the text and the bytes of its media) and
the file is invalidated when the reference policy or the reward changes (their fingerprints).
The math that uses them, :func:`mmalign.align.calibrate`, lives in ``align/``; this module holds
the file I/O so that ``align/`` stays pure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mmalign.errors import DataError
from mmalign.utils.atomic import atomic_write_bytes

Media = bytes | bytearray | memoryview | str | os.PathLike


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
