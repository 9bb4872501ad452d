"""Dataset records: prompts, SFT demonstrations and preference pairs, with optional media."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class PromptRecord:
    """A prompt; media paths are resolved against the dataset file's folder."""

    prompt: str
    images: list[Any] = field(default_factory=list)
    audio: list[Any] = field(default_factory=list)
    video: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # the row's other columns (id, category, ...)
    source: str = ""  # file:line or path row i

    @property
    def media(self) -> list[Any]:
        """All media items (images, then audio, then video)."""
        return [*self.images, *self.audio, *self.video]


@dataclass(kw_only=True)
class SFTRecord(PromptRecord):
    """A demonstration: prompt and target response."""

    response: str


@dataclass(kw_only=True)
class PreferenceRecord(PromptRecord):
    """A preference pair: ``chosen`` is preferred to ``rejected`` for ``prompt``."""

    chosen: str
    rejected: str
