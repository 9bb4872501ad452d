"""Prompts exactly as lm-evaluation-harness's ``mmlu`` task builds them (``tasks/mmlu/default``).

Context = description + k few-shot blocks + the test question::

    The following are multiple choice questions (with answers) about <subject with spaces>.\\n\\n
    <dev question.strip()>\\nA. <a>\\nB. <b>\\nC. <c>\\nD. <d>\\nAnswer: <gold letter>\\n\\n   (x k)
    <question.strip()>\\nA. <a>\\nB. <b>\\nC. <c>\\nD. <d>\\nAnswer:

The choices are the letters ``A``..``D``; each is scored as the continuation ``" " + letter``
(``target_delimiter``). Few-shot examples are the first k rows of the subject's dev split
(``fewshot_split: dev`` with the ``first_n`` sampler).
"""

from __future__ import annotations

from collections.abc import Sequence

from mmalign.evaluation.mmlu.data import LETTERS, Question

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
CHOICES: tuple[str, ...] = LETTERS
CONTINUATIONS: tuple[str, ...] = tuple(TARGET_DELIMITER + c for c in CHOICES)

COT_TRIGGER = "Answer: Let's think step by step."


def description(subject: str) -> str:
    """lm-eval's per-subject description (underscores become spaces, one space after 'about')."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def doc_to_text(q: Question) -> str:
    """``{{question.strip()}}\\nA. {{choices[0]}}\\nB. ...\\nD. {{choices[3]}}\\nAnswer:``"""
    lines = [q.question.strip()] + [f"{letter}. {choice}" for letter, choice in zip(CHOICES, q.choices)]
    return "\n".join(lines) + "\nAnswer:"


def fewshot_prefix(subject: str, shots: Sequence[Question]) -> str:
    """Description plus the few-shot blocks (everything before the test question)."""
    blocks = [doc_to_text(s) + TARGET_DELIMITER + CHOICES[s.answer] + FEWSHOT_DELIMITER for s in shots]
    return description(subject) + "".join(blocks)


def context(prefix: str, q: Question) -> str:
    """The full lm-eval context for ``q`` given its subject's :func:`fewshot_prefix`."""
    return prefix + doc_to_text(q)


def cot_prompt(q: Question) -> str:
    """Zero-shot chain-of-thought prompt: the question block, then ``Answer: Let's think step by step.``"""
    text = doc_to_text(q)
    return description(q.subject) + text[: -len("Answer:")] + COT_TRIGGER
