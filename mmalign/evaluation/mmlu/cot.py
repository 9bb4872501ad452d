"""Chain-of-thought MMLU: CoT@k majority vote and Gemini's uncertainty-routed CoT@k.

Answer extraction (:func:`extract_answer`) tries, in order, and takes the *last* match of the first
pattern that matches (case-insensitive):

1. ``answer is (X)`` / ``answer is X`` / ``answer is: X`` (also "answer would be", "answer: is")
2. ``Answer: X`` / ``Answer: (X)``
3. a lone ``(X)``

where ``X`` is one of A-D followed by a non-letter. No match means the sample abstains.

CoT@k: the prediction is the most frequent extracted answer among the k samples (ties go to the
answer that reached the top count first); a question with no extracted answer is wrong.

Uncertainty-routed CoT@k (Gemini report, §5.1.1): with ``share = top count / k`` (abstentions count
in ``k``), predict the majority answer when ``share >= tau``, otherwise the greedy log-likelihood
answer without CoT. ``tau`` is chosen on the validation split from the candidates ``{i/k}`` plus
``> 1`` (always greedy) by validation accuracy, ties going to the larger ``tau``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmalign.evaluation.mmlu.data import LETTERS

ANSWER_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"answer\s+(?:is|would\s+be)\s*:?\s*\(?([A-D])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"answer\s*:\s*\(?([A-D])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"\(([A-D])\)"),
)
NEVER = 1.0 + 1e-9  # a threshold no share reaches: always route to greedy


def extract_answer(text: str) -> int | None:
    """The answer index (0-3) stated in a chain of thought, or None."""
    for pattern in ANSWER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return LETTERS.index(matches[-1].upper())
    return None


def vote(answers: Sequence[int | None]) -> tuple[int | None, float]:
    """``(majority answer, its share of all k samples)``; ``(None, 0.0)`` when nothing was extracted."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    top = max(counts.values())
    first = next(a for a in answers if a is not None and counts[a] == top)
    return first, top / len(answers)


def route(greedy: int, answers: Sequence[int | None], tau: float) -> tuple[int, bool]:
    """``(prediction, used_cot)``: the CoT majority when its share reaches ``tau``, else greedy."""
    majority, share = vote(answers)
    if majority is not None and share >= tau:
        return majority, True
    return greedy, False


@dataclass
class RoutedItem:
    """What routing needs for one question."""

    greedy: int
    answers: list[int | None]
    gold: int


def candidate_taus(k: int) -> list[float]:
    return [i / k for i in range(1, k + 1)] + [NEVER]


def tune_tau(items: Sequence[RoutedItem], k: int) -> tuple[float, list[dict[str, float]]]:
    """Pick ``tau`` maximising accuracy on ``items`` (the val split); returns it and the grid."""
    grid = []
    for tau in candidate_taus(k):
        correct = sum(route(it.greedy, it.answers, tau)[0] == it.gold for it in items)
        grid.append({"tau": tau, "acc": correct / len(items) if items else 0.0})
    best = max(grid, key=lambda g: (g["acc"], g["tau"]))
    return best["tau"], grid


def sample_texts(policy: Any, prompts: Sequence[str], k: int, *, max_new_tokens: int, temperature: float,
                 top_p: float) -> list[list[str]]:
    """k sampled continuations per prompt from a policy's ``sample`` (any adapter)."""
    out = policy.sample(list(prompts), n=k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    texts = list(out.texts)
    return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]
