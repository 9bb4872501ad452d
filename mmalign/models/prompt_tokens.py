"""The token ids of one text prompt, the way every text policy encodes it."""

from __future__ import annotations

from typing import Any

from mmalign.models.policy import Prompt, TokenPrompt


def prompt_token_ids(tokenizer: Any, prompt: Prompt, *, chat: bool) -> list[int]:
    """A :class:`TokenPrompt`'s ids as given; otherwise the text through the tokenizer's chat
    template (one user turn plus the generation prompt) when ``chat``, else plain."""
    if isinstance(prompt, TokenPrompt):
        return list(prompt.token_ids)
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}],
                                             add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt.text)["input_ids"])
