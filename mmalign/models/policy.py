"""The one interface for everything that generates or is trained: :class:`Policy`.

Text, vision-language and audio-language policies of any tier implement it; CTRL, best-of-N
decoding and the evaluators never branch on modality. (Agreed interface: the policies engineer
implements it; the CTRL, rewards, MMLU and multimodal code is written against it.)
:class:`ScoringPolicy` is its scoring part (token ids in, log-probs and logits out), the one
interface MMLU and export verification use; exported ONNX / GGUF models implement only that.
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


@dataclass
class TokenPrompt(Prompt):
    """A prompt given as token ids (any chat template already applied): ``encode`` and ``sample``
    use the ids as they are, so two models can be compared on exactly the same tokens."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)


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
    distributions: torch.Tensor | None = None  # FloatTensor[R, T, V]: log of it (sample(keep_distributions=True))
    texts: list[str] = field(default_factory=list)  # decoded responses
    finish_reasons: list[str] = field(default_factory=list)  # "eos" | "stop" | "length"
    n: int = 1


@dataclass
class ContinuationScores:
    """What :meth:`ScoringPolicy.score_continuations` returns, one entry per (context, continuation)."""

    logprobs: list[float]  # summed log-prob of the continuation's tokens given the context
    greedy: list[bool]  # every continuation token is the argmax at its position (lm-eval's is_greedy)
    stats: dict[str, int] = field(default_factory=dict)  # rows, inputs, forward_tokens, prefix_tokens, ...


@runtime_checkable
class ScoringPolicy(Protocol):
    """The scoring part of a policy: what MMLU and export verification use, and all an exported
    model (ONNX, GGUF; :mod:`mmalign.models.exported`) implements. Token ids go in, log-probs
    and logits come out; nobody outside ``models/`` sees a tokenizer or a model object."""

    device: torch.device
    max_length: int  # the model window as lm-eval resolves it (config, then tokenizer, then 2048)
    prefix_token_id: int  # the token an empty context starts from (BOS, else EOS), as lm-eval
    pad_token_id: int

    def tokenize(self, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of plain text (no chat template). ``None`` keeps the tokenizer's own
        special-token behaviour, except that a text already starting with the BOS text gets no
        second one (lm-eval's ``tok_encode``); ``True`` / ``False`` force it."""
        ...

    def encode(self, prompts: Sequence[str | Prompt], responses: Sequence[str]) -> SequenceBatch:
        ...

    def batch_from_ids(self, prompts: Sequence[str | Prompt], prompt_ids: Sequence[Sequence[int]],
                       response_ids: Sequence[Sequence[int]]) -> SequenceBatch:
        """A SequenceBatch from already tokenised rows (prompts left-padded, responses right-padded)."""
        ...

    def score(self, batch: SequenceBatch, *, temperature: float = 1.0) -> torch.Tensor:
        ...

    def logits(self, batch: SequenceBatch) -> torch.Tensor:
        """Logits [R, T, V] at the positions that predict each response token."""
        ...

    def score_continuations(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                            *, batch_size: int = 16, shared_prefix: bool = True) -> ContinuationScores:
        """Summed log-prob of each continuation after its context (token ids; the model input is
        ``context + continuation[:-1]``), with the work shared where an adapter can: rows with the
        same input share a forward pass, and the token prefix common to many rows runs once with
        its KV cache reused (``shared_prefix=False`` turns that off)."""
        ...

    def sample(self, prompts: Sequence[str | Prompt], n: int = 1, *, max_new_tokens: int = 32,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               stop: Sequence[str] = (), generator: torch.Generator | None = None,
               ignore_eos: bool = False) -> Samples:
        """As :meth:`Policy.sample`; ``ignore_eos`` decodes all ``max_new_tokens`` past EOS."""
        ...


@runtime_checkable
class Policy(Protocol):
    """What CTRL, decoding and evaluation need from a model."""

    tokenizer: Any
    device: torch.device

    def sample(self, prompts: Sequence[str | Prompt], n: int = 1, *, max_new_tokens: int = 32,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               stop: Sequence[str] = (), generator: torch.Generator | None = None,
               keep_distributions: bool = False) -> Samples:
        """Sample ``n`` continuations per prompt (each prompt prefilled once, its cache shared);
        ``keep_distributions`` also keeps each step's whole log-distribution (``Samples.distributions``)."""
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
