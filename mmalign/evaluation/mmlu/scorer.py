"""Log-likelihood multiple-choice scoring (lm-eval's ``multiple_choice`` output type).

For each question the four requests ``(context, " A")`` ... ``(context, " D")`` are tokenised exactly
as lm-eval does; the prediction is ``argmax(lls)`` (``acc``) and ``argmax(lls / len(choice))``
(``acc_norm``, with ``len`` the character length of the choice string ``"A"``, as lm-eval).
A subject's questions go to the backend in one call so it can share their common prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmalign.errors import DataError
from mmalign.evaluation.mmlu.backends import Backend
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


def subject_rows(backend: Backend, subject: str, shots: Sequence[Question],
                 questions: Sequence[Question]) -> list[list[Row]]:
    """The lm-eval model inputs for each question's four choices."""
    prefix = fewshot_prefix(subject, shots)
    out = []
    for q in questions:
        ctx_text = context(prefix, q)
        rows = []
        for cont_text in CONTINUATIONS:
            ctx, cont = encode_pair(backend.encode, ctx_text, cont_text)
            if not cont:
                raise DataError(f"{q.where}: the continuation '{cont_text}' tokenises to nothing after this context")
            rows.append(make_row(ctx, cont, backend.max_length))
        out.append(rows)
    return out


def score_loglik(backend: Backend, data: MMLUData, subjects: Sequence[str], *, shots: int, split: str = "test",
                 limit: int | None = None, batch_size: int = 16, desc: str = "mmlu") -> dict[str, list[QuestionResult]]:
    """Score every selected subject; returns results per subject in file order."""
    results: dict[str, list[QuestionResult]] = {}
    for subject in progress(subjects, desc=desc):
        questions = data.get(split, subject)[:limit] if limit else data.get(split, subject)
        rows = subject_rows(backend, subject, data.get("dev", subject)[:shots], questions)
        flat = [r for rs in rows for r in rs]
        scores = backend.score_rows(flat, batch_size)
        out = []
        for i, q in enumerate(questions):
            lls = scores[4 * i: 4 * i + 4]
            pred, pred_norm = predictions(lls)
            out.append(QuestionResult(subject, i, q.answer, lls, pred, pred_norm, q.where))
        results[subject] = out
    return results
