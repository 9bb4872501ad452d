"""Log-likelihood multiple-choice scoring (lm-eval's ``multiple_choice`` output type).

For each question the four requests ``(context, " A")`` ... ``(context, " D")`` are tokenised exactly
as lm-eval does; the prediction is ``argmax(lls)`` (``acc``) and ``argmax(lls / len(choice))``
(``acc_norm``, with ``len`` the character length of the choice string ``"A"``, as lm-eval).
Scoring goes through the policy's scoring interface (:class:`~mmalign.models.policy.ScoringPolicy`,
any adapter: Hugging Face, ONNX, GGUF): a subject's questions are one ``score_continuations`` call,
so the adapter can share their common token prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmalign.errors import DataError
from mmalign.evaluation.mmlu.data import MMLUData, Question
from mmalign.evaluation.mmlu.prompts import CHOICES, CONTINUATIONS, context, fewshot_prefix
from mmalign.evaluation.mmlu.tokens import Row, encode_pair, make_row
from mmalign.utils.progress import progress


@dataclass
class QuestionResult:
    """Scores and predictions for one question."""

    subject: str
    index: int  # position in the subject's split
    answer: int
    lls: list[float]
    pred: int
    pred_norm: int
    where: str = ""

    @property
    def acc(self) -> float:
        return float(self.pred == self.answer)

    @property
    def acc_norm(self) -> float:
        return float(self.pred_norm == self.answer)


def predictions(lls: Sequence[float], choices: Sequence[str] = CHOICES) -> tuple[int, int]:
    """``(argmax(lls), argmax(lls / len(choice)))`` with numpy's first-max tie-breaking."""
    arr = np.asarray(lls)
    lengths = np.array([float(len(c)) for c in choices])
    return int(np.argmax(arr)), int(np.argmax(arr / lengths))


def subject_rows(policy: Any, subject: str, shots: Sequence[Question], questions: Sequence[Question], *,
                 add_bos_token: bool | None = None) -> list[list[Row]]:
    """The lm-eval (context, continuation) rows of each question's four choices."""
    prefix = fewshot_prefix(subject, shots)

    def encode(text: str) -> list[int]:
        return policy.tokenize(text, add_special_tokens=add_bos_token)

    out = []
    for q in questions:
        ctx_text = context(prefix, q)
        rows = []
        for cont_text in CONTINUATIONS:
            ctx, cont = encode_pair(encode, ctx_text, cont_text)
            if not cont:
                raise DataError(f"{q.where}: the continuation '{cont_text}' tokenises to nothing after this context")
            rows.append(make_row(ctx, cont, policy.max_length))
        out.append(rows)
    return out


def score_loglik(policy: Any, data: MMLUData, subjects: Sequence[str], *, shots: int, split: str = "test",
                 limit: int | None = None, batch_size: int = 16, desc: str = "mmlu", shared_prefix: bool = True,
                 add_bos_token: bool | None = None, stats: dict[str, int] | None = None
                 ) -> dict[str, list[QuestionResult]]:
    """Score every selected subject with ``policy`` (a ScoringPolicy); returns results per subject
    in file order. ``stats`` (if given) accumulates the adapter's counters (forward tokens, ...)."""
    results: dict[str, list[QuestionResult]] = {}
    for subject in progress(subjects, desc=desc):
        questions = data.get(split, subject)[:limit] if limit else data.get(split, subject)
        rows = subject_rows(policy, subject, data.get("dev", subject)[:shots], questions, add_bos_token=add_bos_token)
        flat = [r for rs in rows for r in rs]
        scored = policy.score_continuations([r.context for r in flat], [r.cont for r in flat], batch_size=batch_size,
                                            shared_prefix=shared_prefix)
        if stats is not None:
            for name, value in scored.stats.items():
                stats[name] = stats.get(name, 0) + value
        scores = scored.logprobs
        out = []
        for i, q in enumerate(questions):
            lls = scores[4 * i: 4 * i + 4]
            pred, pred_norm = predictions(lls)
            out.append(QuestionResult(subject, i, q.answer, lls, pred, pred_norm, q.where))
        results[subject] = out
    return results
