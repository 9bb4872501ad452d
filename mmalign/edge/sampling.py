"""Next-token choice in NumPy: greedy, or temperature / top-k / top-p sampling with a seeded RNG;
and best-of-N selection with any scoring callable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class SamplingParams:
    """``greedy`` ignores the rest; ``top_k=0`` and ``top_p=1`` disable those filters."""

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling (use greedy=True instead)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def filtered_logprobs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Log-probs [B, V] of the sampling distribution (temperature, then top-k, then top-p)."""
    z = logits.astype(np.float64) / params.temperature
    if params.top_k and params.top_k < z.shape[-1]:
        kth = np.partition(z, -params.top_k, axis=-1)[:, -params.top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    if params.top_p < 1.0:
        order = np.argsort(-z, axis=-1)
        probs = np.exp(log_softmax(np.take_along_axis(z, order, axis=-1)))
        before = np.cumsum(probs, axis=-1) - probs  # mass strictly before each token
        drop_sorted = before >= params.top_p  # keeps the smallest prefix with mass >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        z = np.where(drop, -np.inf, z)
    return log_softmax(z)


def choose(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
           distributions: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pick one token per row of ``logits`` [B, V]; returns (token ids [B], their log-probs [B]).
    ``distributions`` (a list) gets the log-distribution [B, V] the tokens were drawn from (greedy:
    the model's own, at temperature 1)."""
    if params.greedy:
        ids = logits.argmax(axis=-1)
        logp = log_softmax(logits.astype(np.float64))
        if distributions is not None:
            distributions.append(logp)
        return ids, np.take_along_axis(logp, ids[:, None], -1)[:, 0]
    logp = filtered_logprobs(logits, params)
    if distributions is not None:
        distributions.append(logp)
    u = rng.random((logp.shape[0], 1))
    cdf = np.cumsum(np.exp(logp), axis=-1)
    ids = np.minimum((cdf < u * cdf[:, -1:]).sum(axis=-1), logp.shape[-1] - 1)
    return ids, np.take_along_axis(logp, ids[:, None], -1)[:, 0]


def best_of_n(candidates: Sequence[T], score: Callable[[T], float]) -> tuple[T, list[float]]:
    """The highest-scoring candidate (first on ties) and every candidate's score."""
    if not candidates:
        raise ValueError("best_of_n needs at least one candidate")
    scores = [float(score(c)) for c in candidates]
    return candidates[int(np.argmax(scores))], scores
