"""Held-out prompts for export verification: a built-in set or the user's file."""

from __future__ import annotations

import json
from pathlib import Path

from mmalign.errors import UserError

DEFAULT_PROMPTS = (
    "Human: What is the capital of Italy?\n\nAssistant:",
    "Human: Give me three tips for sleeping better.\n\nAssistant:",
    "Human: Write a haiku about the ocean.\n\nAssistant:",
    "Human: How do I boil an egg?\n\nAssistant:",
    "Human: Explain what a neural network is.\n\nAssistant:",
    "The quick brown fox",
    "Best-of-N sampling works by",
    "Once upon a time, in a small village,",
    "The following are multiple choice questions about physics.",
    "Human: Can you recommend a good book?\n\nAssistant:",
    "1 2 3 4 5",
    "red green blue",
    "Human: What is 2 + 2?\n\nAssistant:",
    "Alignment makes a model",
    "Human: Summarise the plot of Hamlet.\n\nAssistant:",
    "Answer: The answer is",
    "Human: Translate 'good morning' into French.\n\nAssistant:",
    "In the beginning there was",
    "Human: Why is the sky blue?\n\nAssistant:",
    "circle square triangle",
)


def load_prompts(path: str | Path | None, count: int) -> list[str]:
    """The first ``count`` prompts from ``path`` (.txt: one per line; .jsonl: objects with "prompt") or the defaults."""
    if count < 1:
        raise UserError(f"--eval-count must be >= 1 (got {count})")
    if path is None:
        prompts = list(DEFAULT_PROMPTS)
    else:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: eval prompts file not found")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            prompts = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    prompts.append(str(json.loads(line)["prompt"]))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise UserError(f"{path}:{lineno}: expected a JSON object with a 'prompt' field ({exc})") from exc
        else:
            prompts = [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]
        if not prompts:
            raise UserError(f"{path}: no prompts in file")
    return prompts[:count]
