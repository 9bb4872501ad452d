"""Log-likelihood backends for multiple-choice scoring.

A backend turns text into token ids (lm-eval's ``tok_encode``) and returns, for each
:class:`~mmalign.evaluation.mmlu.tokens.Row`, the summed log-prob of its continuation.

* :class:`HFBackend` - a Hugging Face causal LM + tokenizer (a checkpoint directory, or a
  ``TextPolicy``'s ``.model``/``.tokenizer``). Rows that share an input (the four one-token
  letters of a question) share one forward pass; rows are batched longest-first; the token prefix
  common to a subject's rows (description + few-shot examples) is run once and its KV cache is
  reused by every batch. The prefix is the longest common prefix of the *token* sequences, so a
  merge across the text boundary can never make the cache wrong. A one-time check against a plain
  forward pass turns the cache off if the model does not reproduce it.
* :class:`PolicyBackend` - any :class:`~mmalign.models.policy.Policy` via ``policy.score`` on a
  :class:`~mmalign.models.policy.SequenceBatch` built from the same token ids.
* :class:`GGUFBackend` - a GGUF file through llama-cpp-python (optional).
* :class:`EdgeBackend` - an ``mmalign export`` directory (ONNX via onnxruntime, or GGUF via the NumPy
  reference runner) through the torch-free edge runtime in :mod:`mmalign.edge`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from mmalign.errors import UserError
from mmalign.evaluation.mmlu.tokens import Row, hf_encoder

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer names one
_TOKENIZER_INFINITY = 1000000000000000019884624838656
MIN_PREFIX = 8  # shorter common prefixes are not worth a cache


class Backend(Protocol):
    """What the scorer needs from a model."""

    name: str
    max_length: int
    encode: Callable[[str], list[int]]

    def score_rows(self, rows: Sequence[Row], batch_size: int) -> list[float]:
        """Summed continuation log-prob per row (same order)."""
        ...


def resolve_max_length(config: Any, tokenizer: Any) -> int:
    """lm-eval's ``resolve_max_length``: text config, then config, then tokenizer, then 2048."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != _TOKENIZER_INFINITY:
        return int(mml)
    return DEFAULT_MAX_LENGTH


def _group_rows(rows: Sequence[Row]) -> tuple[list[tuple[int, ...]], list[int], list[list[int]]]:
    """Unique inputs, how many trailing positions each needs, and which rows use each."""
    index: dict[tuple[int, ...], int] = {}
    inputs: list[tuple[int, ...]] = []
    need: list[int] = []
    users: list[list[int]] = []
    for i, row in enumerate(rows):
        j = index.get(row.input_ids)
        if j is None:
            j = index[row.input_ids] = len(inputs)
            inputs.append(row.input_ids)
            need.append(0)
            users.append([])
        need[j] = max(need[j], len(row.cont))
        users[j].append(i)
    return inputs, need, users


def _common_prefix(seqs: Sequence[tuple[int, ...]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


class HFBackend:
    """lm-eval-exact scoring with a Hugging Face causal LM (fast path: shared inputs + prefix cache)."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, *, add_bos_token: bool | None = None,
                 max_length: int | None = None, prefix_cache: bool = True) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encode = hf_encoder(tokenizer, add_bos_token)
        self.max_length = max_length or resolve_max_length(model.config, tokenizer)
        self.prefix_cache = prefix_cache
        self._cache_verified = False
        self._start = 0
        params = inspect.signature(model.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self.device = next(model.parameters()).device
        self.stats = {"forward_tokens": 0, "prefix_tokens": 0, "rows": 0, "inputs": 0}

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: str = "float32", device: str = "cpu", **kwargs: Any) -> HFBackend:
        """Load a checkpoint directory (no remote code)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from mmalign.utils.progress import is_quiet

        if is_quiet():
            hf_logging.disable_progress_bar()
        p = Path(path)
        if not (p / "config.json").is_file():
            raise UserError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
        torch_dtype = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}.get(dtype, torch.float32)
        from mmalign.utils.io_errors import check_tokenizer_dir, reading

        check_tokenizer_dir(p, "model")
        with reading(p, "model", what="tokenizer", broad=True):
            tokenizer = AutoTokenizer.from_pretrained(p)
        with reading(p, "model", what="model", broad=True):
            model = AutoModelForCausalLM.from_pretrained(p, dtype=torch_dtype).to(device)
        return cls(model, tokenizer, **kwargs)

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def score_rows(self, rows: Sequence[Row], batch_size: int, *, greedy: list[bool] | None = None) -> list[float]:
        """Summed continuation log-probs; ``greedy`` (if given) is filled with lm-eval's ``is_greedy``."""
        if greedy is not None:
            greedy[:] = [False] * len(rows)
        if not rows:
            return []
        inputs, need, users = _group_rows(rows)
        self.stats["rows"] += len(rows)
        self.stats["inputs"] += len(inputs)
        out: list[float] = [0.0] * len(rows)
        cached, plain = self._split_for_prefix(rows, inputs, need, users)
        for members, start in ((cached, self._start), (plain, 0)):
            if not members:
                continue
            prefix_kv = self._prefix(inputs[members[0]][:start]) if start else None
            if start and prefix_kv is None:
                start = 0
            order = sorted(members, key=lambda j: (-len(inputs[j]), inputs[j]))
            for b in range(0, len(order), batch_size):
                chunk = order[b:b + batch_size]
                logps = self._forward([inputs[j] for j in chunk], [need[j] for j in chunk], start, prefix_kv)
                if prefix_kv is not None and not self._cache_verified and not self._verify(inputs[chunk[0]], need[chunk[0]], logps[0]):
                    return self.score_rows(rows, batch_size, greedy=greedy)
                for j, lp in zip(chunk, logps):
                    for i in users[j]:
                        cont = rows[i].cont
                        tail = lp[lp.shape[0] - len(cont):]
                        picked = tail.gather(1, torch.tensor(cont, device=tail.device).unsqueeze(1))
                        out[i] = float(picked.sum())
                        if greedy is not None:
                            greedy[i] = bool(tail.argmax(-1).tolist() == list(cont))
        return out

    def _split_for_prefix(self, rows: Sequence[Row], inputs: list[tuple[int, ...]], need: list[int],
                          users: list[list[int]]) -> tuple[list[int], list[int]]:
        """Inputs that share a cacheable token prefix (sets ``self._start``) and the rest."""
        self._start = 0
        every = list(range(len(inputs)))
        if not self.prefix_cache:
            return [], every
        full = [j for j in every if not any(rows[i].truncated for i in users[j])]
        if len(full) < 2:
            return [], every
        start = min(_common_prefix([inputs[j] for j in full]), min(len(inputs[j]) - need[j] for j in full))
        if start < MIN_PREFIX:
            return [], every
        self._start = start
        head = inputs[full[0]][:start]
        cached = [j for j in every if inputs[j][:start] == head and len(inputs[j]) - need[j] >= start]
        chosen = set(cached)
        return cached, [j for j in every if j not in chosen]

    def _verify(self, row_input: tuple[int, ...], need: int, cached: torch.Tensor) -> bool:
        """Compare one cached result with a plain forward pass; turn the cache off if they differ."""
        self._cache_verified = True
        plain = self._forward([row_input], [need], 0, None)[0]
        if torch.allclose(plain.float(), cached.float(), atol=_tolerance(plain.dtype), rtol=0):
            return True
        log.warning("prefix KV cache does not reproduce the plain forward pass; scoring without it")
        self.prefix_cache = False
        return False

    def _prefix(self, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        ids = torch.tensor([prefix], device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        self.stats["prefix_tokens"] += len(prefix)
        if type(cache) is not DynamicCache or not all(type(layer) is DynamicLayer for layer in cache.layers):
            return None
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _forward(self, batch: list[tuple[int, ...]], need: list[int], start: int,
                 prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None) -> list[torch.Tensor]:
        """Log-probs [need_i, V] at the last ``need_i`` positions of each input."""
        from transformers import DynamicCache

        suffixes = [x[start:] for x in batch]
        width = max(len(s) for s in suffixes)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for i, s in enumerate(suffixes):
            ids[i, :len(s)] = torch.tensor(s)
        keep = max(width - (len(s) - n) for s, n in zip(suffixes, need))
        kwargs: dict[str, Any] = {"input_ids": ids.to(self.device)}
        if self._keep_arg:
            kwargs["logits_to_keep"] = keep
        if prefix_kv is not None:
            b = len(batch)
            kwargs[self._cache_arg] = DynamicCache(
                ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix_kv])
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        self.stats["forward_tokens"] += int(ids.numel())
        logits = self.model(**kwargs).logits
        offset = width - logits.shape[1]
        result = []
        for i, (s, n) in enumerate(zip(suffixes, need)):
            a = len(s) - n - offset
            result.append(torch.log_softmax(logits[i, a:a + n], dim=-1))
        return result


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-8, torch.float32: 1e-3}.get(dtype, 5e-2)


class PolicyBackend:
    """Any :class:`~mmalign.models.policy.Policy`: rows become a SequenceBatch for ``policy.score``."""

    name = "policy"

    def __init__(self, policy: Any, *, add_bos_token: bool | None = None, max_length: int | None = None) -> None:
        self.policy = policy
        tok = policy.tokenizer
        self.encode = hf_encoder(tok, add_bos_token)
        config = getattr(getattr(policy, "model", None), "config", None)
        self.max_length = max_length or resolve_max_length(config, tok)
        self.pad_id = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0

    @torch.no_grad()
    def score_rows(self, rows: Sequence[Row], batch_size: int) -> list[float]:
        from mmalign.models.policy import Prompt, SequenceBatch

        out: list[float] = []
        for b in range(0, len(rows), batch_size):
            chunk = rows[b:b + batch_size]
            prompts = [r.input_ids[: len(r.input_ids) - len(r.cont) + 1] for r in chunk]
            p_len = max(len(p) for p in prompts)
            t_len = max(len(r.cont) for r in chunk)
            pid = torch.full((len(chunk), p_len), self.pad_id, dtype=torch.long)
            pmask = torch.zeros_like(pid)
            rid = torch.full((len(chunk), t_len), self.pad_id, dtype=torch.long)
            rmask = torch.zeros_like(rid)
            for i, (p, r) in enumerate(zip(prompts, chunk)):
                pid[i, p_len - len(p):] = torch.tensor(p)
                pmask[i, p_len - len(p):] = 1
                rid[i, :len(r.cont)] = torch.tensor(r.cont)
                rmask[i, :len(r.cont)] = 1
            device = getattr(self.policy, "device", torch.device("cpu"))
            batch = SequenceBatch(pid.to(device), pmask.to(device), rid.to(device), rmask.to(device),
                                  torch.arange(len(chunk), device=device),
                                  [Prompt(text=self.policy.tokenizer.decode(list(p))) for p in prompts])
            lp = self.policy.score(batch)
            out.extend(float(x) for x in (lp * rmask.to(lp.device)).sum(dim=1))
        return out


class GGUFBackend:
    """A GGUF model through llama-cpp-python (``pip install llama-cpp-python``)."""

    name = "gguf"

    def __init__(self, path: str | Path, *, n_ctx: int = 2048, add_bos_token: bool | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise UserError(f"{path}: scoring a GGUF file needs llama-cpp-python (pip install llama-cpp-python)") from None
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False)
        self.max_length = n_ctx
        add_bos = True if add_bos_token is None else add_bos_token

        def encode(text: str) -> list[int]:
            return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))

        self.encode = encode

    def score_rows(self, rows: Sequence[Row], batch_size: int) -> list[float]:
        import numpy as np

        out = []
        for row in rows:
            self.llm.reset()
            self.llm.eval(list(row.input_ids))
            n = len(row.input_ids)
            logits = np.asarray(self.llm.scores[n - len(row.cont):n], dtype=np.float64)
            logits = logits - logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            out.append(float(sum(logp[i, t] for i, t in enumerate(row.cont))))
        return out


class EdgeBackend:
    """An exported model run by the torch-free edge runtime (:mod:`mmalign.edge`): ONNX or GGUF.

    Same grouping as :class:`HFBackend`: shared inputs, longest-first batches, and the common token
    prefix run once with its KV cache reused (repeated across the batch).
    """

    def __init__(self, directory: str | Path, *, add_bos_token: bool | None = None, max_length: int | None = None,
                 prefix_cache: bool = True) -> None:
        from transformers import AutoTokenizer

        from mmalign.edge.manifest import Manifest

        self.directory = Path(directory)
        manifest = Manifest.read(self.directory)
        self.name = manifest.format
        if manifest.format == "onnx":
            from mmalign.edge.onnx_lm import OnnxLM

            self.runner: Any = OnnxLM.load(self.directory)
        elif manifest.format == "gguf":
            from mmalign.edge.gguf_model import GGUFLlama

            self.runner = _GGUFBatch(GGUFLlama(self.directory / manifest.model_file))
        else:
            raise UserError(f"{directory}: a '{manifest.format}' export; load it as a checkpoint directory instead")
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.encode = hf_encoder(self.tokenizer, add_bos_token)
        self.max_length = max_length or _export_max_length(manifest, self.tokenizer)
        self.prefix_cache = prefix_cache
        self.stats = {"forward_tokens": 0, "prefix_tokens": 0, "rows": 0, "inputs": 0}

    def score_rows(self, rows: Sequence[Row], batch_size: int) -> list[float]:
        import numpy as np

        inputs, need, users = _group_rows(rows)
        start = 0
        if self.prefix_cache and len(inputs) > 1 and not any(r.truncated for r in rows):
            start = min(_common_prefix(inputs), min(len(x) - n for x, n in zip(inputs, need)))
            start = start if start >= MIN_PREFIX else 0
        past = None
        if start:
            _, past = self.runner.forward(np.asarray([inputs[0][:start]]), self.runner.empty_past(1))
            self.stats["prefix_tokens"] += start
        out = [0.0] * len(rows)
        order = sorted(range(len(inputs)), key=lambda j: (-len(inputs[j]), inputs[j]))
        pad = self.tokenizer.pad_token_id or 0
        for b in range(0, len(order), batch_size):
            chunk = order[b:b + batch_size]
            suffixes = [inputs[j][start:] for j in chunk]
            width = max(len(x) for x in suffixes)
            ids = np.full((len(chunk), width), pad, dtype=np.int64)
            for i, x in enumerate(suffixes):
                ids[i, :len(x)] = x
            if not past:
                batch_past = self.runner.empty_past(len(chunk))
            elif isinstance(self.runner, _GGUFBatch):
                batch_past = past  # rows run one at a time
            else:
                batch_past = [np.repeat(p, len(chunk), axis=0) for p in past]
            logits, _ = self.runner.forward(ids, batch_past)
            self.stats["forward_tokens"] += int(ids.size)
            for i, j in enumerate(chunk):
                for r in users[j]:
                    cont = rows[r].cont
                    at = len(suffixes[i]) - len(cont)
                    lg = logits[i, at:at + len(cont)].astype(np.float64)
                    lg = lg - lg.max(axis=-1, keepdims=True)
                    lp = lg - np.log(np.exp(lg).sum(axis=-1, keepdims=True))
                    out[r] = float(sum(lp[t, tok] for t, tok in enumerate(cont)))
        return out


def _export_max_length(manifest: Any, tokenizer: Any) -> int:
    """The model window: the manifest's ``extra.max_position_embeddings``, else the source config's."""
    import json

    if manifest.extra.get("max_position_embeddings"):
        return int(manifest.extra["max_position_embeddings"])
    source = Path(manifest.source) / "config.json" if manifest.source else None
    if source is not None and source.is_file():
        from types import SimpleNamespace

        return resolve_max_length(SimpleNamespace(**json.loads(source.read_text(encoding="utf-8"))), tokenizer)
    return resolve_max_length(None, tokenizer)


class _GGUFBatch:
    """Batch/past interface over the single-sequence NumPy GGUF runner."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def empty_past(self, batch: int) -> list:
        return []

    def forward(self, ids: Any, past: list) -> tuple[Any, list]:
        import numpy as np

        rows = [self.model.forward(list(row), past or None) for row in ids]
        return np.stack([r[0] for r in rows]), rows[0][1] if len(rows) == 1 else []


def open_backend(model: Any, *, dtype: str = "float32", device: str = "cpu", prefix_cache: bool = True,
                 add_bos_token: bool | None = None) -> Backend:
    """A backend for a path (HF checkpoint dir, ``.onnx``/ONNX dir, ``.gguf``) or a loaded Policy."""
    if not isinstance(model, (str, Path)):
        hf_model, tok = getattr(model, "model", None), getattr(model, "tokenizer", None)
        if hf_model is not None and tok is not None and hasattr(hf_model, "config") and callable(hf_model):
            return HFBackend(hf_model, tok, prefix_cache=prefix_cache, add_bos_token=add_bos_token)
        return PolicyBackend(model, add_bos_token=add_bos_token)
    p = Path(model).expanduser()
    if not p.exists():
        raise UserError(f"{model}: model path not found")
    if p.suffix == ".gguf":
        return GGUFBackend(p, add_bos_token=add_bos_token)
    if p.is_dir() and (p / "mmalign_export.json").is_file():
        return EdgeBackend(p, add_bos_token=add_bos_token, prefix_cache=prefix_cache)
    if p.suffix == ".onnx":
        return EdgeBackend(p.parent, add_bos_token=add_bos_token, prefix_cache=prefix_cache)
    if p.is_dir() and (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
        # a LoRA-aligned policy (e.g. `mmalign align` with lora.enabled): base + adapter, merged
        from mmalign.models.loading import load_policy

        policy = load_policy(p, device=device, dtype=dtype)
        merged = policy.model.merge_and_unload() if hasattr(policy.model, "merge_and_unload") else policy.model
        return HFBackend(merged, policy.tokenizer, prefix_cache=prefix_cache, add_bos_token=add_bos_token)
    return HFBackend.from_pretrained(p, dtype=dtype, device=device, prefix_cache=prefix_cache, add_bos_token=add_bos_token)
