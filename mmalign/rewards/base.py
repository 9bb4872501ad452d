"""The :class:`Reward` interface every scorer implements, and :func:`as_reward` for plain callables.

A reward maps a batch of (prompt, response[, media]) to one float32 score per row on the CPU.
Scores must be finite: a NaN or infinity raises :class:`~mmalign.errors.RewardError` naming the
reward and carrying the row (``index``), because a silent NaN poisons every quantile the
calibration store computes from it. A plain callable that raises becomes a RewardError too.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from mmalign.errors import DataError, RewardError, UserError


@runtime_checkable
class Reward(Protocol):
    """Scores responses to prompts; ``deterministic`` means equal inputs always score equally."""

    deterministic: bool

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 media: Sequence[list] | None = None) -> torch.Tensor:
        """Return float32 scores of shape ``[len(prompts)]`` on the CPU."""
        ...

    def fingerprint(self) -> str:
        """A stable id of the reward's identity (its config and weights)."""
        ...


def stable_hash(obj: Any) -> str:
    """A short sha256 of ``obj`` rendered as canonical JSON (non-JSON values via ``repr``)."""
    text = json.dumps(obj, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_batch(prompts: Sequence[str], responses: Sequence[str], media: Sequence[list] | None = None) -> None:
    """Raise DataError unless prompts, responses (and media, if given) have one entry per row."""
    if isinstance(prompts, str) or isinstance(responses, str):
        raise DataError("reward inputs must be sequences of strings, not a single string")
    if len(prompts) != len(responses):
        raise DataError(f"reward got {len(prompts)} prompts but {len(responses)} responses")
    if media is not None and len(media) != len(prompts):
        raise DataError(f"reward got {len(prompts)} prompts but {len(media)} media lists")


def to_scores(values: Any, n: int, source: str = "reward") -> torch.Tensor:
    """Turn ``values`` into a finite float32 CPU tensor of shape ``[n]``, or raise DataError."""
    try:
        scores = torch.as_tensor(values if not isinstance(values, torch.Tensor) else values.detach(),
                                 dtype=torch.float32).cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise RewardError(source, f"returned something that is not a sequence of numbers ({exc})") from None
    if scores.numel() != n:
        raise RewardError(source, f"returned {scores.numel()} scores for {n} responses")
    bad = (~torch.isfinite(scores)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise RewardError(source, f"returned a non-finite score ({scores[i].item()})", index=i)
    return scores


class CallableReward:
    """Wraps ``fn(prompts, responses[, media]) -> sequence of floats`` as a :class:`Reward`."""

    def __init__(self, fn: Callable[..., Any], *, deterministic: bool = True, name: str | None = None,
                 identity: Any = None) -> None:
        if not callable(fn):
            raise TypeError(f"as_reward expects a callable, got {type(fn).__name__}")
        self.fn = fn
        self.deterministic = deterministic
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self._identity = identity
        self._takes_media = _accepts_media(fn)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 media: Sequence[list] | None = None) -> torch.Tensor:
        check_batch(prompts, responses, media)
        if not len(prompts):
            return torch.zeros(0, dtype=torch.float32)
        try:
            if self._takes_media:
                values = self.fn(list(prompts), list(responses), media)
            else:
                values = self.fn(list(prompts), list(responses))
        except UserError:
            raise
        except Exception as exc:  # the user's own code: one line, its traceback chained for --debug
            lines = str(exc).strip().splitlines()
            detail = f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
            raise RewardError(f"reward '{self.name}'", f"raised {detail} (on a batch of {len(prompts)} rows; "
                              "--debug shows the traceback)") from exc
        return to_scores(values, len(prompts), source=f"reward '{self.name}'")

    def fingerprint(self) -> str:
        if self._identity is not None:
            return stable_hash({"kind": "callable", "identity": self._identity})
        module = getattr(self.fn, "__module__", "")
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):
            source = ""
        return stable_hash({"kind": "callable", "module": module, "name": self.name, "source": source})

    def __repr__(self) -> str:
        return f"CallableReward({self.name})"


def _accepts_media(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def as_reward(fn: Reward | Callable[..., Any], *, deterministic: bool = True) -> Reward:
    """Return ``fn`` if it already is a Reward, else wrap the plain callable."""
    if isinstance(fn, Reward) and hasattr(fn, "fingerprint"):
        return fn
    return CallableReward(fn, deterministic=deterministic)
