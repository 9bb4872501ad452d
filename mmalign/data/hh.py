"""The Anthropic HH dialogue format: ``\\n\\nHuman: ...\\n\\nAssistant: ...`` turns.

The prompt of a transcript is everything up to and including its last ``\\n\\nAssistant:``; the
response is the rest (with its leading space, so ``prompt + response`` is the transcript).
"""

from __future__ import annotations

import re

from mmalign.errors import DataError

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")


def is_hh(text: str) -> bool:
    """Whether ``text`` looks like an HH transcript (has an Assistant turn after a Human turn)."""
    return ASSISTANT in text and ("Human:" in text.split(ASSISTANT, 1)[0])


def split_hh(text: str, where: str = "") -> tuple[str, str]:
    """``(prompt, response)`` of a transcript, split after its last ``\\n\\nAssistant:``."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}not an HH dialogue (no '\\n\\nAssistant:' turn)")
    cut += len(ASSISTANT)
    return text[:cut], text[cut:]


def hh_turns(text: str) -> list[tuple[str, str]]:
    """``[(role, content), ...]`` with roles ``user`` / ``assistant``, contents stripped.

    A transcript ending in an empty ``Assistant:`` turn (a prompt) ends with the last user turn.
    """
    matches = list(_TURN.finditer(text))
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        role = "user" if m.group(1) == "Human" else "assistant"
        content = text[m.end():end].strip()
        if role == "assistant" and not content and i == len(matches) - 1:
            break
        turns.append((role, content))
    return turns


def hh_messages(prompt: str, response: str | None = None) -> list[dict[str, str]] | None:
    """Chat messages for an HH prompt (plus response), or None if ``prompt`` is not HH."""
    turns = hh_turns(prompt)
    if not turns or turns[0][0] != "user":
        return None
    messages = [{"role": r, "content": c} for r, c in turns]
    if response is not None:
        messages.append({"role": "assistant", "content": response.strip()})
    return messages
