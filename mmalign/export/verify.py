"""Parity of an exported model with the PyTorch model it came from.

Both models are policies behind the same scoring interface
(:class:`~mmalign.models.policy.ScoringPolicy`): the source is the checkpoint's ``TextPolicy``, the
export whatever the policy factory opens for it (ONNX in onnxruntime, GGUF in llama.cpp or the
NumPy runner, bitsandbytes in PyTorch). Prompts go in as token ids (``TokenPrompt``), so both see
exactly the same tokens.

On each held-out prompt the reference greedily generates ``T`` tokens (``sample(greedy=True,
ignore_eos=True)``); the exported model then runs one teacher-forced pass per prompt over prompt +
that continuation (``logits`` on a batch whose prompt is the first token), as llama.cpp's
``perplexity --kl-divergence`` does, which is cheap even for a slow runtime. The primary numbers
are the mean KL and the teacher-forced top-1 agreement; free-running greedy agreement is a
secondary column, computed on the first ``greedy_count`` prompts only (all by default). Then:

- **logit relative error** of a prompt = ``max|Δlogits| / max|logits_ref|`` over every position of
  prompt + reference continuation that predicts one of its tokens (teacher-forced, one
  full-sequence pass each); the report gives its max and mean over prompts.
- **greedy agreement** = agreement of the greedy *outputs* as a deployed runtime produces them,
  stopping at EOS: each output is cut after its first EOS (at most ``T`` tokens); over the longer of
  the two outputs, a position counts when both have the same token there (a missing token is a
  mismatch). **Strict agreement** = the same over all ``P × T`` free-running positions, ignoring
  EOS, so tokens a model would never emit after its stop token are compared too (after a
  divergence later tokens usually differ). **Teacher-forced agreement** compares argmaxes on the
  reference sequence.
- **divergences** = how many prompts' free-running outputs leave the reference's (ignoring EOS), and
  **divergence margin max** = the largest top-1 minus top-2 logit margin of the reference where one
  first leaves it. One flip costs the rest of its continuation in greedy agreement, so a small
  model with near-ties can lose several points there from rounding alone; a margin near 0 says each
  flip was such a near-tie, a large one that the export changed a confident choice.
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
from typing import Any

import numpy as np

from mmalign.models.policy import ScoringPolicy, TokenPrompt
from mmalign.utils.progress import progress


def greedy_tokens(policy: ScoringPolicy, prompt_ids: Sequence[int], n: int) -> list[int]:
    """``n`` greedy tokens after ``prompt_ids`` (batch 1, KV cache, EOS not special)."""
    return batch_greedy(policy, [list(prompt_ids)], n)[0]


def batch_greedy(policy: ScoringPolicy, prompts: list[list[int]], n: int) -> list[list[int]]:
    """``n`` greedy tokens after each of ``prompts``, all in one left-padded batch (EOS not special)."""
    if not prompts:
        return []
    out = policy.sample([TokenPrompt(token_ids=list(p)) for p in prompts], n=1, max_new_tokens=n, greedy=True,
                        ignore_eos=True)
    return [out.response_ids[i, : int(out.response_mask[i].sum())].tolist() for i in range(len(prompts))]


def sequence_logits(policy: ScoringPolicy, ids: Sequence[int]) -> np.ndarray:
    """Logits ``[S - 1, V]`` at every position of ``ids`` that predicts its next token (one pass),
    in the precision the runtime computes them (float64 stays float64, half precision becomes float32)."""
    import torch

    ids = [int(t) for t in ids]
    batch = policy.batch_from_ids([TokenPrompt(token_ids=ids[:1])], [ids[:1]], [ids[1:]])
    logits = policy.logits(batch)[0].detach().cpu()
    return (logits if logits.dtype == torch.float64 else logits.float()).numpy()


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
    greedy_prompts: int = -1  # prompts the free-running greedy agreement was measured on (-1: all)
    kl_max: float = float("nan")  # the largest per-position KL
    divergences: int = 0  # greedy-compared prompts whose free-running output left the reference's
    divergence_margin_max: float = float("nan")  # largest reference top-2 logit margin where one first left

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


def _timed_greedy(policy: ScoringPolicy, prompts: list[list[int]], n: int, name: str) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    outs = [greedy_tokens(policy, p, n) for p in progress(prompts, desc=f"{name} greedy")]
    return outs, len(prompts) * n / max(time.perf_counter() - start, 1e-9)


def run_reference(reference: ScoringPolicy, prompt_ids: list[list[int]], new_tokens: int,
                  name: str = "pytorch-fp32", timed: int | None = None) -> Reference:
    """Greedy-generate ``new_tokens`` per prompt with the reference and keep its logits.

    The first ``timed`` prompts (None: all) are decoded one at a time, as a deployed runtime
    decodes, and give the tokens/s column; the rest go in one batch, which is faster."""
    k = len(prompt_ids) if timed is None else max(0, min(timed, len(prompt_ids)))
    conts, tps = _timed_greedy(reference, prompt_ids[:k], new_tokens, name) if k else ([], float("nan"))
    conts += batch_greedy(reference, prompt_ids[k:], new_tokens)
    logits = [sequence_logits(reference, list(p) + list(c)) for p, c in zip(prompt_ids, conts)]
    return Reference([list(p) for p in prompt_ids], conts, logits, tps, name)


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


def top2_margin(logits: np.ndarray) -> float:
    """How far the top logit of one ``[V]`` row is ahead of the second: near 0 at a near-tie, where a
    harmless rounding difference can flip a greedy choice."""
    top = np.partition(np.asarray(logits, dtype=np.float64), -2)[-2:]
    return float(top[1] - top[0])


def compare(ref: Reference, exported: ScoringPolicy, eos_ids: Sequence[int] = (),
            greedy_count: int | None = None, name: str = "exported") -> Parity:
    """Parity of ``exported`` (named ``name`` in the report) against a computed :class:`Reference`
    (see the module docstring); the free-running greedy comparison uses the first ``greedy_count``
    prompts (None: all, 0: none)."""
    g = len(ref.prompt_ids) if greedy_count is None else max(0, min(greedy_count, len(ref.prompt_ids)))
    exp_out, exp_tps = _timed_greedy(exported, ref.prompt_ids[:g], ref.new_tokens, name) if g else ([], float("nan"))
    rel, strict, tf_agree, kls, margins = [], [], [], [], []
    same_total, positions = 0, 0
    for i, (prompt, ref_cont, ref_logits) in enumerate(zip(ref.prompt_ids, ref.continuations, ref.logits)):
        exp_logits = sequence_logits(exported, prompt + ref_cont)
        rel.append(float(np.abs(exp_logits - ref_logits).max() / max(np.abs(ref_logits).max(), 1e-12)))
        if i < g:
            exp_cont = exp_out[i]
            strict.extend(int(a == b) for a, b in zip(ref_cont, exp_cont))
            first = next((k for k, (a, b) in enumerate(zip(ref_cont, exp_cont)) if a != b), None)
            if first is not None:
                margins.append(top2_margin(ref_logits[len(prompt) - 1 + first]))
            same, length = output_agreement(until_eos(ref_cont, eos_ids), until_eos(exp_cont, eos_ids))
            same_total, positions = same_total + same, positions + length
        positions_next = slice(len(prompt) - 1, len(prompt) - 1 + len(ref_cont))
        predicted = exp_logits[positions_next].argmax(axis=-1)
        tf_agree.extend((predicted == np.asarray(ref_cont)).astype(int).tolist())
        kls.extend(next_token_kl(ref_logits[positions_next], exp_logits[positions_next]).tolist())
    nan = float("nan")
    return Parity(len(ref.prompt_ids), ref.new_tokens, max(rel), float(np.mean(rel)),
                  same_total / positions if positions else nan, float(np.mean(strict)) if strict else nan,
                  float(np.mean(tf_agree)), exp_tps, ref.tokens_per_s, name, ref.name,
                  float(np.mean(kls)) if kls else nan, greedy_prompts=g if greedy_count is not None else -1,
                  kl_max=float(np.max(kls)) if kls else nan, divergences=len(margins),
                  divergence_margin_max=max(margins) if margins else nan)


def measure_parity(reference: ScoringPolicy, exported: ScoringPolicy, prompt_ids: list[list[int]], new_tokens: int,
                   eos_ids: Sequence[int] = (), greedy_count: int | None = None, *,
                   names: tuple[str, str] = ("pytorch-fp32", "exported")) -> Parity:
    """Compare ``exported`` with ``reference`` on tokenised prompts (outputs stop at ``eos_ids``);
    ``names`` label the two runtimes in the report."""
    return compare(run_reference(reference, prompt_ids, new_tokens, names[0], timed=greedy_count), exported, eos_ids,
                   greedy_count, names[1])


#: The floor an export's parity must reach, per quant (teacher-forced top-1 at least, mean KL in
#: nats at most). Floors catch a broken file (a wrong layout, garbage int8: top-1 near 0, KL of
#: several nats), not a merely lossy one; the numbers a quant reaches on a real model are in
#: docs/export.md. ``mmalign export`` exits non-zero below them unless told to keep the file.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "fp32": (0.98, 0.01), "f32": (0.98, 0.01), "f16": (0.98, 0.01),
    "int8": (0.90, 0.10), "q8_0": (0.90, 0.10),
    "int4": (0.50, 1.00), "q4_0": (0.50, 1.00), "nf4": (0.50, 1.00),
}


def below_threshold(parity: dict[str, Any], quant: str) -> str | None:
    """Why ``parity`` (a :meth:`Parity.as_dict`) misses the floor of ``quant``, or None if it does not."""
    if quant not in THRESHOLDS:
        return None
    min_top1, max_kl = THRESHOLDS[quant]
    top1, kl = parity["teacher_forced_agreement"], parity["mean_kl"]
    misses = []
    if not top1 >= min_top1:
        misses.append(f"teacher-forced top-1 {top1:.1%} < {min_top1:.0%}")
    if not kl <= max_kl:
        misses.append(f"mean KL {kl:.3g} > {max_kl:g}")
    return ", ".join(misses) or None
