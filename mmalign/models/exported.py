"""Exported models (``mmalign export`` ONNX / GGUF directories, GGUF files) as scoring policies.

:class:`ExportedPolicy` implements :class:`~mmalign.models.policy.ScoringPolicy` (``tokenize``,
``encode``, ``batch_from_ids``, ``score``, ``logits``, ``score_continuations``, ``sample``) on one
of the runtimes of :mod:`mmalign.models.export_runtimes`, with the Hugging Face tokenizer saved
next to the export. An export is frozen: training, LoRA and saving raise a one-line error.
:func:`load_exported_policy` is the factory's loader for kind ``exported``
(:data:`mmalign.models.loading.POLICY_LOADERS`): an export directory or its ``.onnx`` file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from mmalign.errors import PromptError, UserError
from mmalign.models.continuations import PrefixCheck, score_continuations
from mmalign.models.eval_tokens import model_window, prefix_token_id, tok_encode
from mmalign.models.export_runtimes import (
    LlamaCppRuntime,
    NumpyGGUFRuntime,
    OnnxRuntime,
    llama_cpp_available,
)
from mmalign.models.policy import (
    ContinuationScores,
    Prompt,
    Samples,
    SequenceBatch,
    as_prompt,
)
from mmalign.models.prompt_tokens import prompt_token_ids

MANIFEST = "mmalign_export.json"  # written by mmalign.export (mmalign.edge.manifest.MANIFEST_NAME)
RUNTIMES = ("auto", "onnxruntime", "llama.cpp", "numpy-gguf")
LLAMA_CPP_CONTEXT = 2048  # llama.cpp keeps logits for every position of its context: keep it modest


def export_directory(path: str | Path) -> Path | None:
    """The ``mmalign export`` directory of an ONNX or GGUF export at ``path`` (the directory or its
    ``.onnx`` file), or None (a bitsandbytes export is an ordinary checkpoint directory)."""
    p = Path(path).expanduser()
    directory = p.parent if p.suffix.lower() == ".onnx" and p.is_file() else p
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    try:
        fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return directory if fmt in ("onnx", "gguf") else None


class ExportedPolicy:
    """An exported model behind the scoring part of the Policy protocol (CPU, frozen)."""

    training = False
    frozen = True

    def __init__(self, runtime: Any, tokenizer: Any, *, eos_ids: Sequence[int], max_length: int,
                 pad_id: int | None = None, chat_template: str = "auto", source: str = "") -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.eos_ids = {int(e) for e in eos_ids}
        self.max_length = int(max_length)
        if pad_id is None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        self.pad_token_id = int(pad_id)
        self.chat_template = chat_template
        self.source = source
        self.device = torch.device("cpu")
        self._prefix_check = PrefixCheck()

    def __repr__(self) -> str:
        return f"ExportedPolicy({self.source!r}, runtime={self.runtime.name})"

    @property
    def runtime_name(self) -> str:
        return self.runtime.name

    # ----------------------------------------------------------------- tokens
    @property
    def prefix_token_id(self) -> int:
        return int(prefix_token_id(self.tokenizer))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def vocabulary(self) -> dict[str, int]:
        return dict(self.tokenizer.get_vocab())

    def tokenize(self, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
        return tok_encode(self.tokenizer, text, add_special_tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _uses_chat_template(self) -> bool:
        has = bool(getattr(self.tokenizer, "chat_template", None))
        if self.chat_template == "on" and not has:
            raise UserError("model.chat_template: 'on' but the export's tokenizer has no chat template")
        return has if self.chat_template == "auto" else self.chat_template == "on"

    def encode_prompts(self, prompts: Sequence[str | Prompt], max_new_tokens: int = 0) -> list[list[int]]:
        """Token ids of each prompt (a TokenPrompt's as given; text through the chat template when
        in use), checked against the window."""
        chat = self._uses_chat_template()
        out = []
        for i, raw in enumerate(prompts):
            p = as_prompt(raw)
            if p.media:
                raise PromptError(i, "has media items; an exported text model cannot take them")
            ids = prompt_token_ids(self.tokenizer, p, chat=chat)
            ids = ids or [self.prefix_token_id]
            if len(ids) + max_new_tokens > self.max_length:
                raise PromptError(i, f"has {len(ids)} tokens but at most {self.max_length - max_new_tokens} "
                                f"fit (window {self.max_length} minus {max_new_tokens} new tokens)")
            out.append(ids)
        return out

    def check_prompts(self, prompts: Sequence[str | Prompt], max_new_tokens: int = 0) -> None:
        self.encode_prompts(prompts, max_new_tokens)

    def _pad(self, seqs: Sequence[Sequence[int]], *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                cols = slice(width - len(s), width) if left else slice(0, len(s))
                ids[r, cols] = torch.tensor(list(s))
                mask[r, cols] = 1
        return ids, mask

    def batch_from_ids(self, prompts: Sequence[str | Prompt], prompt_ids: Sequence[Sequence[int]],
                       response_ids: Sequence[Sequence[int]]) -> SequenceBatch:
        p_ids, p_mask = self._pad(prompt_ids, left=True)
        r_ids, r_mask = self._pad(response_ids, left=False)
        return SequenceBatch(prompt_ids=p_ids, prompt_mask=p_mask, response_ids=r_ids, response_mask=r_mask,
                             prompt_index=torch.arange(len(prompts)), prompts=[as_prompt(p) for p in prompts])

    def encode(self, prompts: Sequence[str | Prompt], responses: Sequence[str], *,
               add_eos: bool = False) -> SequenceBatch:
        if len(prompts) != len(responses):
            raise UserError(f"encode got {len(prompts)} prompts but {len(responses)} responses")
        eos = [min(self.eos_ids)] if add_eos and self.eos_ids else []
        resp = [list(self.tokenizer(r, add_special_tokens=False)["input_ids"]) + eos for r in responses]
        return self.batch_from_ids(prompts, self.encode_prompts(prompts, max(len(r) for r in resp)), resp)

    # ----------------------------------------------------------------- scoring
    def logits(self, batch: SequenceBatch) -> torch.Tensor:
        """Logits [R, T, V] predicting each real response token (0 at padding): one pass per row
        over its prompt and response tokens, unpadded."""
        rows = []
        for r in range(batch.prompt_ids.shape[0]):
            prompt = batch.prompt_ids[r][batch.prompt_mask[r].bool()].tolist()
            if not prompt:
                raise UserError(f"row {r} has no prompt token to predict its response from")
            length = int(batch.response_mask[r].sum())
            seq = prompt + batch.response_ids[r, :length].tolist()
            rows.append((len(prompt), length, self.runtime.logits(seq) if length else None))
        first = next((lg for _, _, lg in rows if lg is not None), np.zeros((1, self.vocab_size), np.float32))
        out = torch.zeros(len(rows), batch.response_ids.shape[1], first.shape[-1],
                          dtype=torch.from_numpy(first[:0]).dtype)  # as the runtime computes them
        for r, (start, length, lg) in enumerate(rows):
            if length:
                out[r, :length] = torch.from_numpy(np.ascontiguousarray(lg[start - 1:start - 1 + length]))
        return out

    def score(self, batch: SequenceBatch, *, temperature: float = 1.0) -> torch.Tensor:
        """Per-token log-probs [R, T] of the responses (0 on padding; never differentiable)."""
        logits = self.logits(batch).float()
        if temperature != 1.0:
            logits = logits / temperature
        logp = logits.log_softmax(-1).gather(-1, batch.response_ids[..., None]).squeeze(-1)
        return logp * batch.response_mask

    def score_continuations(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                            *, batch_size: int = 16, shared_prefix: bool = True) -> ContinuationScores:
        """Summed continuation log-probs with shared inputs and a shared-prefix KV cache, as the
        torch adapter (:func:`mmalign.models.continuations.score_continuations`)."""
        return score_continuations(_LogProbs(self.runtime, self.pad_token_id), contexts, continuations,
                                   batch_size=batch_size, shared_prefix=shared_prefix, check=self._prefix_check)

    # ----------------------------------------------------------------- sampling
    def sample(self, prompts: Sequence[str | Prompt], n: int = 1, *, max_new_tokens: int = 32,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               stop: Sequence[str] = (), generator: torch.Generator | None = None,
               ignore_eos: bool = False, keep_distributions: bool = False) -> Samples:
        """``n`` continuations per prompt (NumPy sampling, seeded from ``generator`` or torch's global
        generator); ``keep_distributions`` as in :meth:`mmalign.models.text.TextPolicy.sample`. On a
        batched runtime (ONNX) the prompt is prefilled once and its ``n`` rows decode in one pass
        per token; llama.cpp and the NumPy runner decode one row at a time."""
        from mmalign.edge.sampling import SamplingParams

        if n < 1 or max_new_tokens < 1:
            raise UserError(f"sampling needs n >= 1 and max_new_tokens >= 1 (got {n}, {max_new_tokens})")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise UserError("sampling needs temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
        if not prompts:
            raise UserError("no prompts to sample from")
        greedy = greedy or temperature == 0
        params = SamplingParams(greedy=greedy, temperature=1.0 if greedy else temperature, top_k=top_k, top_p=top_p)
        seed = 0 if greedy else int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        eos = set() if ignore_eos else self.eos_ids
        stop = tuple(s for s in stop if s)
        prompt_ids = self.encode_prompts(prompts, max_new_tokens)
        kept: list[list[np.ndarray]] | None = [] if keep_distributions else None
        # a batched runtime decodes a prompt's n rows together; a one-sequence runtime, one by one
        together = n if getattr(self.runtime, "batched", False) else 1
        decoder = self.runtime if together > 1 else _OneRow(self.runtime)
        rows = [row for p in prompt_ids for _ in range(n // together)
                for row in self._decode_rows(decoder, p, together, max_new_tokens, params, rng, eos, stop, kept)]
        r_ids, r_mask = self._pad([toks for toks, _, _, _ in rows], left=False)
        logprobs = torch.zeros(r_ids.shape)
        for r, (_, lps, _, _) in enumerate(rows):
            logprobs[r, :len(lps)] = torch.tensor(lps, dtype=torch.float32)
        distributions = None
        if kept is not None:
            width = next((steps[0].shape[-1] for steps in kept if steps), self.vocab_size)  # the model's logits
            distributions = torch.zeros((*r_ids.shape, width))
            for r, steps in enumerate(kept):
                distributions[r, :len(steps)] = torch.from_numpy(np.concatenate(steps)).float()
        p_ids, p_mask = self._pad(prompt_ids, left=True)
        return Samples(prompt_ids=p_ids.repeat_interleave(n, 0), prompt_mask=p_mask.repeat_interleave(n, 0),
                       response_ids=r_ids, response_mask=r_mask,
                       prompt_index=torch.arange(len(prompts)).repeat_interleave(n),
                       prompts=[as_prompt(p) for p in prompts], logprobs=logprobs,
                       texts=[text for _, _, _, text in rows], finish_reasons=[why for _, _, why, _ in rows], n=n,
                       distributions=distributions)

    def _decode_rows(self, decoder: Any, prompt: list[int], n: int, max_new_tokens: int, params: Any,
                     rng: np.random.Generator, eos: set[int], stop: tuple[str, ...],
                     kept: list[list[np.ndarray]] | None = None) -> list[tuple[list[int], list[float], str, str]]:
        """``n`` rows after ``prompt``, decoded together (``decoder``: ``start_rows`` / ``step_rows`` /
        ``keep_rows``); a row leaves the batch when it ends. ``kept`` (a list) gets each row's list
        of [1, V] sampling log-distributions, in row order."""
        from mmalign.edge.sampling import choose

        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        reasons = ["length"] * n
        steps: list[list[np.ndarray]] = [[] for _ in range(n)]
        if kept is not None:
            kept.extend(steps)
        window = max((len(s) for s in stop), default=0) + 4
        alive = list(range(n))  # the rows still in the batch, in batch order
        last, state = decoder.start_rows(prompt, n)
        for t in range(max_new_tokens):
            drawn: list[np.ndarray] | None = [] if kept is not None else None
            ids, lp = choose(np.asarray(last), params, rng, drawn)
            going = []
            for j, r in enumerate(alive):
                tokens[r].append(int(ids[j]))
                logps[r].append(float(lp[j]))
                if drawn is not None:
                    steps[r].append(drawn[0][j:j + 1])
                if tokens[r][-1] in eos:
                    reasons[r] = "eos"
                elif stop and any(s in self.decode(tokens[r][-window:]) for s in stop):
                    reasons[r] = "stop"
                else:
                    going.append(j)
            if not going or t == max_new_tokens - 1:
                break
            if len(going) < len(alive):
                state = decoder.keep_rows(state, going)
                alive = [alive[j] for j in going]
            last, state = decoder.step_rows(np.asarray([ids[j] for j in going]), state)
        out = []
        for toks, lps, reason in zip(tokens, logps, reasons):
            text = self.decode(toks)
            if reason == "stop":
                text = text[:min(text.find(s) for s in stop if s in text)]
            out.append((toks, lps, reason, text))
        return out

    # ----------------------------------------------------------------- what an export cannot do
    def _frozen(self, what: str) -> UserError:
        return UserError(f"{self.source or 'this model'} is an exported {self.runtime.name} model: it can score and "
                         f"sample but not {what}; use the checkpoint it was exported from")

    def reference(self) -> ExportedPolicy:
        """An export is frozen, so it is its own reference."""
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def set_trainable(self, scope: str = "all") -> None:
        raise self._frozen("train")

    def train(self, mode: bool = True) -> ExportedPolicy:
        if mode:
            raise self._frozen("train")
        return self

    def eval(self) -> ExportedPolicy:
        return self

    def freeze(self) -> ExportedPolicy:
        return self

    def save(self, directory: Any) -> None:
        raise self._frozen("be saved as a checkpoint")

    def prepare(self, accelerator: Any, *objects: Any) -> tuple[Any, ...]:
        raise self._frozen("be prepared for training")

    def through_prepared(self) -> Any:
        raise self._frozen("be prepared for training")


class _OneRow:
    """``start_rows`` / ``step_rows`` / ``keep_rows`` of one row on a runtime whose state holds one
    sequence (llama.cpp, the NumPy runner)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def start_rows(self, ids: Sequence[int], n: int) -> tuple[np.ndarray, Any]:
        if n != 1:
            raise ValueError(f"{self.runtime.name} decodes one row at a time (asked for {n})")
        last, state = self.runtime.start(ids)
        return np.asarray(last)[None], state

    def step_rows(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        last, state = self.runtime.step(int(tokens[0]), state)
        return np.asarray(last)[None], state

    def keep_rows(self, state: Any, rows: Sequence[int]) -> Any:
        return state


class _LogProbs:
    """A runtime's suffix logits as the log-probs :func:`score_continuations` wants."""

    def __init__(self, runtime: Any, pad_id: int) -> None:
        self.runtime, self.pad_id, self.tolerance = runtime, pad_id, runtime.tolerance

    def prefix(self, ids: tuple[int, ...]) -> Any:
        return self.runtime.prefix(ids)

    def forward(self, suffixes: list[tuple[int, ...]], need: list[int], state: Any) -> list[torch.Tensor]:
        logits = self.runtime.suffix_logits(suffixes, state, self.pad_id)
        return [torch.from_numpy(np.asarray(lg[len(lg) - k:], dtype=np.float64)).log_softmax(-1)
                for lg, k in zip(logits, need)]


def _read_tokenizer(directory: Path, key: str) -> Any:
    from transformers import AutoTokenizer

    from mmalign.utils.io_errors import reading

    with warnings.catch_warnings(), reading(directory, key, what="tokenizer", broad=True):
        warnings.simplefilter("ignore")
        return AutoTokenizer.from_pretrained(directory)


def _export_window(manifest: dict[str, Any], tokenizer: Any) -> int:
    """The manifest's ``extra.max_position_embeddings``, else the source config's, else the tokenizer's."""
    extra = manifest.get("extra") or {}
    if extra.get("max_position_embeddings"):
        return int(extra["max_position_embeddings"])
    source = Path(manifest.get("source") or "") / "config.json"
    if manifest.get("source") and source.is_file():
        return model_window(SimpleNamespace(**json.loads(source.read_text(encoding="utf-8"))), tokenizer)
    return model_window(None, tokenizer)


def _gguf_runtime(path: Path, runtime: str, window: int, key: str) -> Any:
    if runtime == "auto":
        runtime = "llama.cpp" if llama_cpp_available() else "numpy-gguf"
    if runtime == "llama.cpp":
        return LlamaCppRuntime(path, n_ctx=min(window, LLAMA_CPP_CONTEXT))
    if runtime == "numpy-gguf":
        return NumpyGGUFRuntime(path)
    raise UserError(f"{key}: runtime '{runtime}' cannot run a GGUF file (choose llama.cpp or numpy-gguf)")


def open_exported(path: str | Path, *, runtime: str = "auto", chat_template: str = "auto",
                  tokenizer: str | Path | None = None, key: str = "model.path") -> ExportedPolicy:
    """An :class:`ExportedPolicy` for an ONNX / GGUF export directory (or its ``.onnx``) or a
    ``.gguf`` file. ``runtime``: ``auto`` (onnxruntime for ONNX; llama.cpp for GGUF when
    llama-cpp-python is installed, else the NumPy runner) or one of :data:`RUNTIMES`.
    ``tokenizer``: a Hugging Face directory whose tokenizer to use instead of the export's own
    (for a ``.gguf`` file, the one transformers rebuilds from the file, which takes seconds)."""
    if runtime not in RUNTIMES:
        raise UserError(f"{key}: unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")
    p = Path(path).expanduser()
    if p.suffix.lower() == ".gguf" and p.is_file():
        return _open_gguf_file(p, runtime, chat_template, tokenizer, key)
    directory = export_directory(p)
    if directory is None:
        raise UserError(f"{key}: {path} is not an ONNX or GGUF export directory (no {MANIFEST} of format onnx/gguf)")
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    model_file = directory / manifest.get("model_file", "")
    if not model_file.is_file():
        raise UserError(f"{key}: {model_file} is missing (the export directory is incomplete)")
    tokenizer = _read_tokenizer(Path(tokenizer) if tokenizer else directory, key)
    window = _export_window(manifest, tokenizer)
    if manifest["format"] == "onnx":
        if runtime not in ("auto", "onnxruntime"):
            raise UserError(f"{key}: an ONNX export runs in onnxruntime, not '{runtime}'")
        engine: Any = OnnxRuntime(directory)
    else:
        engine = _gguf_runtime(model_file, runtime, window, key)
    window = min(window, getattr(engine, "n_ctx", window))
    return ExportedPolicy(engine, tokenizer, eos_ids=manifest.get("eos_token_ids") or [tokenizer.eos_token_id],
                          max_length=window, pad_id=manifest.get("pad_token_id"), chat_template=chat_template,
                          source=str(directory))


def _open_gguf_file(path: Path, runtime: str, chat_template: str, tokenizer_dir: str | Path | None,
                    key: str) -> ExportedPolicy:
    from gguf import GGUFReader

    from mmalign.models.gguf_source import load_gguf_tokenizer

    if runtime == "onnxruntime":
        raise UserError(f"{key}: a GGUF file runs in llama.cpp or numpy-gguf, not onnxruntime")
    tokenizer = _read_tokenizer(Path(tokenizer_dir), key) if tokenizer_dir else load_gguf_tokenizer(path, key=key)
    reader = GGUFReader(str(path))

    def field(name: str) -> Any:
        found = reader.get_field(name)
        return None if found is None else found.contents()

    context = field(f"{field('general.architecture')}.context_length")
    window = int(context) if context is not None else model_window(None, tokenizer)
    eos = field("tokenizer.ggml.eos_token_id")
    eos = eos if eos is not None else tokenizer.eos_token_id
    engine = _gguf_runtime(path, runtime, window, key)
    window = min(window, getattr(engine, "n_ctx", window))
    return ExportedPolicy(engine, tokenizer, eos_ids=[eos] if eos is not None else [], max_length=window,
                          pad_id=field("tokenizer.ggml.padding_token_id"), chat_template=chat_template,
                          source=str(path))


def load_exported_policy(cfg: Any, *, run_device: str = "auto", run_dtype: str = "auto",
                         key: str = "model") -> ExportedPolicy:
    """The factory's loader for kind ``exported`` (a ``model:`` section naming an export)."""
    if cfg.lora.enabled or cfg.quantization != "none":
        raise UserError(f"{key}.path: {cfg.path} is an exported model; it takes no LoRA or quantization "
                        "(those apply to the checkpoint it was exported from)")
    return open_exported(cfg.path, chat_template=cfg.chat_template, tokenizer=cfg.tokenizer or None,
                         key=f"{key}.path")
