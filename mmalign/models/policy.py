"""The one interface for everything that generates or is trained: :class:`Policy`.

Text, vision-language and audio-language policies of any tier implement it; CTRL, best-of-N
decoding and the evaluators never branch on modality. (Agreed interface: the policies engineer
implements it; the CTRL, rewards, MMLU and multimodal code is written against it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class Prompt:
    """A prompt. A plain ``str`` is accepted wherever a Prompt is."""

    text: str
    media: list[Any] = field(default_factory=list)  # image/audio/video items for multimodal policies


def as_prompt(p: str | Prompt) -> Prompt:
    return p if isinstance(p, Prompt) else Prompt(text=str(p))


@dataclass
class SourcedPrompt(Prompt):
    """A Prompt that remembers its record (``file:line``) so errors can name it."""

    source: str = ""


def to_prompt(record: Any) -> Prompt:
    """A policy prompt from a data record (its text, media and source) or a plain prompt."""
    if isinstance(record, Prompt):
        return record
    if isinstance(record, str):
        return Prompt(text=record)
    return SourcedPrompt(text=record.prompt, media=list(record.media), source=getattr(record, "source", ""))


@dataclass
class SequenceBatch:
    """Token view of (prompt, response) rows."""

    prompt_ids: torch.Tensor  # LongTensor[R, P], left-padded
    prompt_mask: torch.Tensor  # LongTensor[R, P]
    response_ids: torch.Tensor  # LongTensor[R, T], right-padded with the pad id
    response_mask: torch.Tensor  # LongTensor[R, T], 1 on real response tokens (incl. a generated EOS)
    prompt_index: torch.Tensor  # LongTensor[R], row -> index of its prompt in the input list
    prompts: list[Prompt]  # the input prompts (media travel with them)


@dataclass
class Samples(SequenceBatch):
    """Sampled continuations; rows are prompt-major: rows i*n .. i*n+n-1 belong to prompt i."""

    logprobs: torch.Tensor = None  # FloatTensor[R, T] under the sampling distribution (0 on padding)
    texts: list[str] = field(default_factory=list)  # decoded responses
    finish_reasons: list[str] = field(default_factory=list)  # "eos" | "stop" | "length"
    n: int = 1


@runtime_checkable
class Policy(Protocol):
    """What CTRL, decoding and evaluation need from a model."""

    tokenizer: Any
    device: torch.device

    def sample(self, prompts: Sequence[str | Prompt], n: int = 1, *, max_new_tokens: int = 32,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               stop: Sequence[str] = (), generator: torch.Generator | None = None) -> Samples:
        """Sample ``n`` continuations per prompt (each prompt prefilled once, its cache shared)."""
        ...

    def encode(self, prompts: Sequence[str | Prompt], responses: Sequence[str]) -> SequenceBatch:
        """Tokenise given (prompt, response) text pairs, one row per pair."""
        ...

    def score(self, batch: SequenceBatch, *, temperature: float = 1.0) -> torch.Tensor:
        """Per-token log-probs [R, T] of the batch's responses (differentiable; 0 on padding)."""
        ...

    def logits(self, batch: SequenceBatch) -> torch.Tensor:
        """Logits [R, T, V] at the response positions (for distillation)."""
        ...

    def reference(self) -> Policy:
        """A frozen reference: a copy, or the same weights with LoRA adapters disabled."""
        ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        ...

    def set_trainable(self, scope: str = "all") -> None:
        """Choose what trains: ``all`` (everything trainable as loaded: full weights, or the LoRA
        adapters, plus any media projectors) or ``projector`` (only the media projectors; a policy
        without them raises ConfigError)."""
        ...

    def save(self, directory: Any) -> None:
        """Save in Hugging Face format (safetensors; full weights or a peft adapter)."""
        ...


@runtime_checkable
class TrainablePolicy(Policy, Protocol):
    """A Policy that recipes train, evaluate and compare (:class:`~mmalign.models.text.TextPolicy`
    and the multimodal adapters): mode switches, freezing and the token facts a recipe needs, so
    that no caller outside ``models/`` reads ``.model`` or ``.tokenizer``."""

    training: bool
    pad_token_id: int
    vocab_size: int

    def train(self, mode: bool = True) -> Any:
        ...

    def eval(self) -> Any:
        ...

    def freeze(self) -> Any:
        """Stop every parameter from training (a teacher or judge)."""
        ...

    def vocabulary(self) -> dict[str, int]:
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of response token ids, as ``sample`` decodes them."""
        ...

    def check_prompts(self, prompts: Sequence[str | Prompt], max_new_tokens: int = 0) -> None:
        """Raise a one-line error if a prompt cannot fit the context with ``max_new_tokens``."""
        ...

    def prepare(self, accelerator: Any, *objects: Any) -> tuple[Any, ...]:
        """``accelerator.prepare`` the model with ``objects``; returns the prepared ``objects``."""
        ...

    def through_prepared(self) -> Any:
        """A context in which forward passes run through the accelerate-wrapped module."""
        ...
