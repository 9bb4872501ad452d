"""Held-out prompts for export verification: a built-in set or the user's file.

A checkpoint whose tokenizer has a chat template is checked on chat-templated prompts (each prompt
a user message, then the assistant's turn), the way it is used; the built-in set for it is
:data:`CHAT_PROMPTS`. Other checkpoints get :data:`DEFAULT_PROMPTS` as raw text.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmalign.errors import UserError

#: Verification defaults (the API's and the CLI's): prompts, reference greedy tokens per prompt
#: (scored teacher-forced), prompts also compared free-running (greedy agreement, a secondary column).
EVAL_COUNT, EVAL_TOKENS, GREEDY_COUNT = 8, 32, 2

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

#: User messages for checkpoints with a chat template (varied: facts, lists, code, arithmetic,
#: translation, a story, so that the continuations exercise different parts of the vocabulary).
CHAT_PROMPTS = (
    "What is the capital of Italy?",
    "Give me three tips for sleeping better.",
    "Write a Python function that reverses a string.",
    "Explain what a neural network is in two sentences.",
    "What is 17 times 23?",
    "Translate 'good morning, how are you?' into French.",
    "Write the first lines of a short story about a lighthouse keeper.",
    "Why is the sky blue?",
    "Summarise the plot of Hamlet.",
    "List the planets of the solar system in order.",
    "How do I boil an egg?",
    "Write a haiku about the ocean.",
)


def load_prompts(path: str | Path | None, count: int, *, chat: bool = False) -> list[str]:
    """The first ``count`` prompts from ``path`` (.txt: one per line; .jsonl: objects with "prompt") or
    the built-in ones (:data:`CHAT_PROMPTS` if ``chat``, else :data:`DEFAULT_PROMPTS`)."""
    if count < 1:
        raise UserError(f"--eval-count must be >= 1 (got {count})")
    if path is None:
        prompts = list(CHAT_PROMPTS if chat else DEFAULT_PROMPTS)
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


def encode_prompts(tokenizer, prompts: list[str], *, chat: bool) -> list[list[int]]:
    """Token ids of ``prompts`` with a transformers tokenizer: each through its chat template (a user
    message, then the assistant's turn) if ``chat``, else as raw text with its special tokens."""
    out = []
    for p in prompts:
        if chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=False)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(p)["input_ids"]
        out.append(list(ids) or [tokenizer.bos_token_id or 0])
    return out


def uses_chat_template(tokenizer, chat_template: str = "auto") -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "on" and not has:
        raise UserError("--chat-template on: the checkpoint's tokenizer has no chat template")
    return has if chat_template == "auto" else chat_template == "on"
