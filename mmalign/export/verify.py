"""Parity of an exported model with the PyTorch model it came from.

On each held-out prompt the reference (PyTorch fp32) greedily generates ``T`` tokens. Then:

- **logit relative error** of a prompt = ``max|Δlogits| / max|logits_ref|`` over every position of
  prompt + reference continuation (teacher-forced, one full-sequence pass each); the report gives
  its max and mean over prompts.
- **greedy agreement** = agreement of the greedy *outputs* as a deployed runtime produces them,
  stopping at EOS: each output is cut after its first EOS (at most ``T`` tokens); over the longer of
  the two outputs, a position counts when both have the same token there (a missing token is a
  mismatch). **Strict agreement** = the same over all ``P × T`` free-running positions, ignoring
  EOS, so tokens a model would never emit after its stop token are compared too (after a
  divergence later tokens usually differ). **Teacher-forced agreement** compares argmaxes on the
  reference sequence.
- **mean KL** = mean over the reference continuation's positions (teacher-forced) of
  KL(p_ref ‖ p_exported) between the two next-token distributions, in nats, as llama.cpp's
  ``perplexity --kl-divergence`` reports it: a harmless near-tie flip shows as a small KL, a broken
  file as a large one.
- **tokens/s** = ``P × T`` / wall time of the greedy generations (KV cache, batch 1, prefill
  included), for the exported runtime and for the PyTorch reference.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from mmalign.utils.progress import progress


class Runner(Protocol):
    name: str

    def logits(self, ids: Sequence[int]) -> np.ndarray: ...  # [S, V]

    def greedy(self, prompt_ids: Sequence[int], n: int) -> list[int]: ...


class TorchRunner:
    """A HF causal LM in PyTorch eager mode (greedy loop with a KV cache, EOS not special)."""

    def __init__(self, model: Any, name: str = "pytorch-fp32") -> None:
        self.model, self.name = model, name

    def _device(self):
        return next(self.model.parameters()).device

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(torch.tensor([list(ids)], device=self._device()))
        return out.logits[0].float().cpu().numpy()

    def greedy(self, prompt_ids: Sequence[int], n: int) -> list[int]:
        import torch

        with torch.no_grad():
            out = self.model(torch.tensor([list(prompt_ids)], device=self._device()), use_cache=True)
            tokens: list[int] = []
            for _ in range(n):
                token = int(out.logits[0, -1].argmax())
                tokens.append(token)
                if len(tokens) == n:
                    break
                out = self.model(torch.tensor([[token]], device=self._device()),
                                 cache=out.cache, use_cache=True)
        return tokens


class OnnxRunner:
    def __init__(self, lm: Any, name: str) -> None:
        self.lm, self.name = lm, name

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.lm.logits(ids)

    def greedy(self, prompt_ids: Sequence[int], n: int) -> list[int]:
        return self.lm.generate_ids(prompt_ids, max_new_tokens=n, stop_at_eos=False)[0].token_ids


class GGUFRunner:
    def __init__(self, model: Any, name: str = "numpy-gguf") -> None:
        self.model, self.name = model, name

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.model.logits(ids)

    def greedy(self, prompt_ids: Sequence[int], n: int) -> list[int]:
        return self.model.greedy(prompt_ids, n)


@dataclass
class Parity:
    prompts: int
    new_tokens: int
    logit_rel_err_max: float
    logit_rel_err_mean: float
    greedy_agreement: float
    strict_agreement: float
    teacher_forced_agreement: float
    tokens_per_s: float
    reference_tokens_per_s: float
    runtime: str
    reference_runtime: str
    mean_kl: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reference:
    """The reference model's greedy continuations and teacher-forced logits on the prompts."""

    prompt_ids: list[list[int]]
    continuations: list[list[int]]
    logits: list[np.ndarray]
    tokens_per_s: float
    name: str

    @property
    def new_tokens(self) -> int:
        return len(self.continuations[0]) if self.continuations else 0


def _timed_greedy(runner: Runner, prompts: list[list[int]], n: int) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    outs = [runner.greedy(p, n) for p in progress(prompts, desc=f"{runner.name} greedy")]
    return outs, len(prompts) * n / max(time.perf_counter() - start, 1e-9)


def run_reference(reference: Runner, prompt_ids: list[list[int]], new_tokens: int) -> Reference:
    """Greedy-generate ``new_tokens`` per prompt with the reference and keep its logits."""
    conts, tps = _timed_greedy(reference, prompt_ids, new_tokens)
    logits = [reference.logits(list(p) + list(c)) for p, c in zip(prompt_ids, conts)]
    return Reference([list(p) for p in prompt_ids], conts, logits, tps, reference.name)


def until_eos(tokens: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """The output a runtime that stops at EOS would return (the EOS token included)."""
    out: list[int] = []
    for tok in tokens:
        out.append(int(tok))
        if tok in eos_ids:
            break
    return out


def output_agreement(ref_out: Sequence[int], exp_out: Sequence[int]) -> tuple[int, int]:
    """(matching positions, positions) over the longer of two outputs; a missing token mismatches."""
    length = max(len(ref_out), len(exp_out))
    same = sum(1 for a, b in zip(ref_out, exp_out) if a == b)
    return same, length


def next_token_kl(ref_logits: np.ndarray, exp_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) ‖ softmax(exp)) per row of two ``[S, V]`` logit arrays, in nats."""
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    lp, lq = log_softmax(ref_logits), log_softmax(exp_logits)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)


def compare(ref: Reference, exported: Runner, eos_ids: Sequence[int] = ()) -> Parity:
    """Parity of ``exported`` against a computed :class:`Reference` (see the module docstring)."""
    exp_out, exp_tps = _timed_greedy(exported, ref.prompt_ids, ref.new_tokens)
    rel, strict, tf_agree, kls = [], [], [], []
    same_total, positions = 0, 0
    for prompt, ref_cont, ref_logits, exp_cont in zip(ref.prompt_ids, ref.continuations, ref.logits, exp_out):
        exp_logits = exported.logits(prompt + ref_cont)
        rel.append(float(np.abs(exp_logits - ref_logits).max() / max(np.abs(ref_logits).max(), 1e-12)))
        strict.extend(int(a == b) for a, b in zip(ref_cont, exp_cont))
        same, length = output_agreement(until_eos(ref_cont, eos_ids), until_eos(exp_cont, eos_ids))
        same_total, positions = same_total + same, positions + length
        positions_next = slice(len(prompt) - 1, len(prompt) - 1 + len(ref_cont))
        predicted = exp_logits[positions_next].argmax(axis=-1)
        tf_agree.extend((predicted == np.asarray(ref_cont)).astype(int).tolist())
        kls.extend(next_token_kl(ref_logits[positions_next], exp_logits[positions_next]).tolist())
    return Parity(len(ref.prompt_ids), ref.new_tokens, max(rel), float(np.mean(rel)),
                  same_total / max(positions, 1), float(np.mean(strict)), float(np.mean(tf_agree)), exp_tps,
                  ref.tokens_per_s, exported.name, ref.name, float(np.mean(kls)) if kls else float("nan"))


def measure_parity(reference: Runner, exported: Runner, prompt_ids: list[list[int]], new_tokens: int,
                   eos_ids: Sequence[int] = ()) -> Parity:
    """Compare ``exported`` with ``reference`` on tokenised prompts (outputs stop at ``eos_ids``)."""
    return compare(run_reference(reference, prompt_ids, new_tokens), exported, eos_ids)
