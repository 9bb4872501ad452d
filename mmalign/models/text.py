"""The text adapter: a :class:`~mmalign.models.policy.Policy` over ``AutoModelForCausalLM``.

Loading (local directory or hub id; dtype/device; LoRA via peft; 4/8-bit via bitsandbytes;
gradient checkpointing) lives in :func:`load_text_policy`. Prompts become tokens through the chat
template when the tokenizer has one (``chat_template: auto``); prompts are left-padded; a prompt
that does not fit the context is an error naming it (``truncation: error``) or is cut from the
left with a warning (``truncation: left``), never silently.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mmalign.config.schemas.sft import TRAINABLE_SCOPES
from mmalign.errors import ConfigError, PromptError, UserError
from mmalign.models.continuations import PrefixCheck, score_continuations
from mmalign.models.eval_tokens import model_window, prefix_token_id, tok_encode
from mmalign.models.hf_prefix import HFPrefixRuntime
from mmalign.models.policy import (
    ContinuationScores,
    Prompt,
    Samples,
    SequenceBatch,
    as_prompt,
)
from mmalign.models.prompt_tokens import prompt_token_ids
from mmalign.models.sampler import positions_from_mask, sample_shared_prefix

log = logging.getLogger(__name__)

META_FILE = "mmalign_policy.json"

SHARED_PREFIX_SCORING = True  # score() forwards each distinct prompt once (see TextPolicy.score)


class TextPolicy:
    """A causal LM plus its tokenizer, implementing the Policy protocol."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, chat_template: str = "auto",
                 max_prompt_tokens: int = 0, truncation: str = "error", reference_mode: str = "auto",
                 base: str | None = None, quantization: str = "none") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.max_prompt_tokens = max_prompt_tokens
        self.truncation = truncation
        self.reference_mode = reference_mode
        self.base = base
        self.quantization = quantization
        self.frozen = False
        self.adapters_disabled = False
        self._reference: TextPolicy | None = None
        self._prepared: torch.nn.Module | None = None  # the accelerate-wrapped model (prepare)
        self._prefix_check = PrefixCheck()  # score_continuations' one-time cache check
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "disable_adapter") and hasattr(self.model, "peft_config")

    @property
    def context_length(self) -> int:
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        ctx = getattr(config, "max_position_embeddings", None)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if tok_max is not None and tok_max < 1_000_000:
            ctx = min(ctx, tok_max) if ctx else tok_max
        return int(ctx or 2048)

    @property
    def eos_ids(self) -> set[int]:
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
        return ids

    def uses_chat_template(self) -> bool:
        has = bool(getattr(self.tokenizer, "chat_template", None))
        if self.chat_template == "on" and not has:
            raise UserError("model.chat_template: 'on' but the tokenizer has no chat template")
        return has if self.chat_template == "auto" else self.chat_template == "on"

    # ----------------------------------------------------------------- tokens
    def prompt_limit(self, max_new_tokens: int) -> int:
        room = self.context_length - max_new_tokens
        limit = min(room, self.max_prompt_tokens) if self.max_prompt_tokens else room
        if limit < 1:
            raise UserError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                            f"{self.context_length}-token context")
        return limit

    def encode_prompts(self, prompts: Sequence[str | Prompt], max_new_tokens: int = 0) -> list[list[int]]:
        """Token ids of each prompt (chat template applied if in use), checked against the context."""
        chat = self.uses_chat_template()
        limit = self.prompt_limit(max_new_tokens)
        out = []
        for i, raw in enumerate(prompts):
            p = as_prompt(raw)
            if p.media:
                raise PromptError(i, "has media items; a text policy cannot take them")
            ids = prompt_token_ids(self.tokenizer, p, chat=chat)
            if not ids:
                if self.tokenizer.bos_token_id is None:
                    raise PromptError(i, "is empty and the tokenizer has no BOS token to start from")
                ids = [self.tokenizer.bos_token_id]
            if len(ids) > limit:
                if self.truncation == "error":
                    raise PromptError(
                        i, f"has {len(ids)} tokens but at most {limit} fit (context "
                        f"{self.context_length} minus {max_new_tokens} new tokens); shorten it or set "
                        f"model.truncation=left")
                msg = f"prompt {i}: {len(ids)} tokens truncated from the left to {limit}"
                warnings.warn(msg, stacklevel=2)
                log.warning(msg)
                ids = ids[-limit:]
            out.append(list(ids))
        return out

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s):] = torch.tensor(s)
                mask[r, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _right_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def encode(self, prompts: Sequence[str | Prompt], responses: Sequence[str], *,
               add_eos: bool = False) -> SequenceBatch:
        """Tokenise (prompt, response) text pairs, one row per pair; ``add_eos`` ends each response
        with EOS (as supervised fine-tuning wants)."""
        if len(prompts) != len(responses):
            raise UserError(f"encode got {len(prompts)} prompts but {len(responses)} responses")
        eos = self.tokenizer.eos_token_id
        resp = [list(self.tokenizer(r, add_special_tokens=False)["input_ids"]) + ([eos] if add_eos else [])
                for r in responses]
        return self.batch_from_ids(prompts, self.encode_prompts(prompts, max(len(r) for r in resp)), resp)

    def batch_from_ids(self, prompts: Sequence[str | Prompt], prompt_ids: Sequence[Sequence[int]],
                       response_ids: Sequence[Sequence[int]]) -> SequenceBatch:
        """A SequenceBatch from already tokenised rows."""
        p_ids, p_mask = self._left_pad(prompt_ids)
        r_ids, r_mask = self._right_pad(response_ids)
        return SequenceBatch(prompt_ids=p_ids, prompt_mask=p_mask, response_ids=r_ids, response_mask=r_mask,
                             prompt_index=torch.arange(len(prompts), device=self.device),
                             prompts=[as_prompt(p) for p in prompts])

    # ----------------------------------------------------------------- forward passes
    def _context(self):
        stack = contextlib.ExitStack()
        if self.frozen:
            stack.enter_context(torch.no_grad())
        if self.adapters_disabled:
            stack.enter_context(self.model.disable_adapter())
        return stack

    def logits(self, batch: SequenceBatch, *, shared_prefix: bool | None = None) -> torch.Tensor:
        """Logits [R, T, V] predicting each response token (differentiable unless frozen).

        Rows that share a prompt (``prompt_index``) forward it once and reuse its KV cache
        (:meth:`_shared_prefix_logits`); ``shared_prefix=False`` (or the module-level
        ``SHARED_PREFIX_SCORING = False``) forces one full-sequence pass per row."""
        use = SHARED_PREFIX_SCORING if shared_prefix is None else shared_prefix
        groups = self._prefix_groups(batch) if use else None
        if groups is not None:
            return self._shared_prefix_logits(batch, *groups)
        return self._full_logits(batch)

    def _full_logits(self, batch: SequenceBatch) -> torch.Tensor:
        """:meth:`logits` with one full-sequence pass per row."""
        ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1).to(self.device)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).to(self.device)
        steps = batch.response_ids.shape[1]
        with self._context():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                             use_cache=False, logits_to_keep=steps + 1)
        return out.logits[:, :-1]

    def _prefix_groups(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(first, inverse)`` when rows share prompts: ``first[u]`` is a row holding unique prompt
        ``u`` and ``inverse[r]`` the unique prompt of row ``r``; None when sharing would not help
        (every prompt distinct), is unsafe (rows of one ``prompt_index`` with different prompt
        tokens) or is unsupported (gradient checkpointing drops the cache; sliding-window layers)."""
        rows = batch.prompt_ids.shape[0]
        if batch.prompt_index is None or rows < 2:
            return None
        index = batch.prompt_index.to(batch.prompt_ids.device)
        _, inverse = torch.unique(index, return_inverse=True)
        unique = int(inverse.max()) + 1
        if unique == rows:
            return None
        if torch.is_grad_enabled() and not self.frozen and self.model.training and any(
                getattr(m, "gradient_checkpointing", False) is True for m in self.model.modules()):
            return None
        if not self._full_attention_only():
            return None
        first = torch.full((unique,), rows, dtype=torch.long, device=inverse.device)
        first = first.scatter_reduce(0, inverse, torch.arange(rows, device=inverse.device), reduce="amin")
        same = (torch.equal(batch.prompt_ids[first][inverse], batch.prompt_ids)
                and torch.equal(batch.prompt_mask[first][inverse], batch.prompt_mask))
        return (first, inverse) if same else None

    def _full_attention_only(self) -> bool:
        """Whether every layer attends to the whole past (so a prompt's cache can be reused as is;
        sliding-window layers keep only part of it and are scored on the full path)."""
        config = getattr(getattr(self.model, "module", self.model), "config", None)
        if config is None:
            return False
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        types = getattr(config, "layer_types", None)
        if types is not None:
            return all(t == "full_attention" for t in types)
        return not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", True) is False

    def _prefix_inputs(self, batch: SequenceBatch, first: torch.Tensor):
        """Context for the shared-prefix prompt pass over rows ``first`` of ``batch`` (a hook for
        policies whose prompt embeddings need more than the token ids)."""
        return contextlib.nullcontext()

    def _shared_prefix_logits(self, batch: SequenceBatch, first: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        """Logits [R, T, V] as :meth:`logits` computes them, with each distinct prompt forwarded
        once: its KV cache (and the last-position logits, which predict the first response token)
        are then indexed out to the rows, and the responses run on top with the positions
        ``positions_from_mask`` gives the full sequence. Differentiable unless frozen."""
        p_ids = batch.prompt_ids[first].to(self.device)
        p_mask = batch.prompt_mask[first].to(self.device)
        width = p_mask.shape[1]
        steps = batch.response_ids.shape[1]
        inverse = inverse.to(self.device)
        with self._context():
            with self._prefix_inputs(batch, first):
                out = self.model(input_ids=p_ids, attention_mask=p_mask, position_ids=positions_from_mask(p_mask),
                                 use_cache=True, logits_to_keep=1)  # the model makes a DynamicCache
            cache = getattr(out, "cache", None)
            if cache is None:  # a model that returned no cache: score the rows in full
                return self._full_logits(batch)
            head = out.logits[:, -1:][inverse]
            if steps == 1:
                return head
            cache.batch_select_indices(inverse)
            # the last response token predicts nothing that is scored, so it is not forwarded
            mask = torch.cat([batch.prompt_mask, batch.response_mask[:, :-1]], dim=1).to(self.device)
            positions = positions_from_mask(mask)[:, width:]
            out = self.model(input_ids=batch.response_ids[:, :-1].to(self.device), attention_mask=mask,
                             position_ids=positions, cache=cache, use_cache=True)
        return torch.cat([head, out.logits], dim=1)

    def score(self, batch: SequenceBatch, *, temperature: float = 1.0,
              shared_prefix: bool | None = None) -> torch.Tensor:
        """Per-token log-probs [R, T] of the batch's responses (0 on padding); ``shared_prefix`` as
        in :meth:`logits`."""
        logits = self.logits(batch, shared_prefix=shared_prefix).float()
        if temperature != 1.0:
            logits = logits / temperature
        ids = batch.response_ids.to(logits.device)
        logp = logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
        return logp * batch.response_mask.to(logp.device)

    # ----------------------------------------------------------------- scoring interface
    # (the ScoringPolicy protocol, shared with the exported adapters: MMLU and export verification)
    @property
    def max_length(self) -> int:
        """The model window as lm-eval resolves it (config, then tokenizer, then 2048)."""
        return model_window(getattr(self.model, "config", None), self.tokenizer)

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context starts from: BOS, else EOS."""
        return int(prefix_token_id(self.tokenizer))

    def tokenize(self, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of plain text, as lm-eval's ``tok_encode`` (no chat template)."""
        return tok_encode(self.tokenizer, text, add_special_tokens)

    def score_continuations(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                            *, batch_size: int = 16, shared_prefix: bool = True) -> ContinuationScores:
        """Summed continuation log-probs (:func:`mmalign.models.continuations.score_continuations`):
        shared inputs, longest-first batches, and each group's common token prefix run once with its
        KV cache reused; never differentiable, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self._context(), torch.no_grad():
                return score_continuations(HFPrefixRuntime(self.model, self.pad_token_id), contexts, continuations,
                                           batch_size=batch_size, shared_prefix=shared_prefix,
                                           check=self._prefix_check)
        finally:
            self.model.train(was_training)

    # ----------------------------------------------------------------- sampling
    def sample(self, prompts: Sequence[str | Prompt], n: int = 1, *, max_new_tokens: int = 32,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, greedy: bool = False,
               stop: Sequence[str] = (), generator: torch.Generator | None = None,
               response_prefix: Sequence[Sequence[int]] | None = None, ignore_eos: bool = False,
               keep_distributions: bool = False) -> Samples:
        """Sample ``n`` continuations per prompt: one prefill per prompt, its KV cache shared by all
        ``n`` rows. ``response_prefix`` (token ids per prompt) continues partial responses; the
        returned responses then exclude the prefix. ``ignore_eos`` decodes ``max_new_tokens`` past EOS.
        ``keep_distributions`` keeps each step's (warped) log-distribution [R, T, V] in
        ``Samples.distributions`` (what the exact-KL trainer would otherwise recompute)."""
        if n < 1:
            raise UserError(f"n must be >= 1, got {n}")
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise UserError("sampling needs temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
        if not prompts:
            raise UserError("no prompts to sample from")
        prompt_ids = self.encode_prompts(prompts, max_new_tokens)
        prefixes = [list(p) for p in response_prefix] if response_prefix is not None else [[] for _ in prompts]
        limit = self.context_length - max_new_tokens
        full = []
        for i, (p, pre) in enumerate(zip(prompt_ids, prefixes)):
            if len(p) + len(pre) > limit:
                raise PromptError(i, f"plus its {len(pre)}-token response prefix exceeds the context")
            full.append(p + pre)
        ids, mask = self._left_pad(full)
        stop = tuple(s for s in stop if s)
        window = max((len(s) for s in stop), default=0) + 4

        def stop_check(row: int, toks: list[int]) -> bool:
            text = self.tokenizer.decode(toks[-window:], skip_special_tokens=True)
            return any(s in text for s in stop)

        was_training = self.model.training
        self.model.eval()
        try:
            with self._context(), torch.no_grad(), self.gathered():
                out = sample_shared_prefix(
                    self.model, {"input_ids": ids}, mask, n=n, max_new_tokens=max_new_tokens,
                    eos_ids=set() if ignore_eos else self.eos_ids, pad_id=self.tokenizer.pad_token_id,
                    temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
                    stop_check=stop_check if stop else None, generator=generator,
                    keep_distributions=keep_distributions)
        finally:
            self.model.train(was_training)
        texts = []
        for r in range(out.tokens.shape[0]):
            toks = out.tokens[r][out.mask[r].bool()].tolist()
            pre = prefixes[r // n]
            text = self.tokenizer.decode(pre + toks, skip_special_tokens=True)
            if pre:
                text = text[len(self.tokenizer.decode(pre, skip_special_tokens=True)):]
            if out.finish_reasons[r] == "stop":
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                text = text[:cut] if cut >= 0 else text
            texts.append(text)
        p_ids, p_mask = self._left_pad(full)
        return Samples(prompt_ids=p_ids.repeat_interleave(n, 0), prompt_mask=p_mask.repeat_interleave(n, 0),
                       response_ids=out.tokens, response_mask=out.mask,
                       prompt_index=torch.arange(len(prompts), device=self.device).repeat_interleave(n),
                       prompts=[as_prompt(p) for p in prompts], logprobs=out.logprobs, texts=texts,
                       finish_reasons=out.finish_reasons, n=n, distributions=out.distributions)

    # ----------------------------------------------------------------- reference, params, saving
    def _sibling(self, model: torch.nn.Module) -> TextPolicy:
        other = TextPolicy(model, self.tokenizer, chat_template=self.chat_template,
                           max_prompt_tokens=self.max_prompt_tokens, truncation=self.truncation,
                           reference_mode=self.reference_mode, base=self.base, quantization=self.quantization)
        other.frozen = True
        return other

    def reference(self) -> TextPolicy:
        """The frozen reference, made on first call (call it before training starts):
        ``adapter_disabled`` shares the weights and runs with LoRA adapters off (no extra memory);
        ``copy`` is a deep copy. ``auto`` picks the former for LoRA policies."""
        if self.frozen:
            return self
        if self._reference is None:
            mode = self.reference_mode
            if mode == "auto":
                mode = "adapter_disabled" if self.is_peft else "copy"
            if mode == "adapter_disabled":
                if not self.is_peft:
                    raise UserError("model.reference: 'adapter_disabled' needs a LoRA policy (set model.lora.enabled)")
                ref = self._sibling(self.model)
                ref.adapters_disabled = True
            else:
                try:
                    model = copy.deepcopy(self.model)
                except Exception as exc:  # e.g. some quantised layers refuse deepcopy
                    raise UserError(f"cannot copy the model for a reference ({exc}); use LoRA with "
                                    f"model.reference=adapter_disabled") from None
                model.requires_grad_(False)
                model.eval()
                ref = self._sibling(model)
            self._reference = ref
        return self._reference

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        if self.frozen:
            return []
        return [p for p in self.model.parameters() if p.requires_grad]

    def set_trainable(self, scope: str = "all") -> None:
        """What trains (SFT's ``train.trainable``): ``all`` keeps what loading chose (full weights,
        or only the LoRA adapters; nothing of a quantised model without LoRA). A text policy has no
        media projector, so ``projector`` is a ConfigError."""
        if scope not in TRAINABLE_SCOPES:
            raise ConfigError(f"train.trainable: must be one of {', '.join(TRAINABLE_SCOPES)}; got '{scope}'")
        if scope == "projector":
            raise ConfigError("train.trainable: 'projector' needs a multimodal checkpoint (this text model "
                              "has no media projector); use 'all'")

    def save(self, directory: str | Path) -> None:
        """Save in Hugging Face format with safetensors: LoRA adapters only for a peft policy
        (plus ``mmalign_policy.json`` naming the base), else the full (possibly quantised) weights."""
        if self.adapters_disabled:
            raise UserError("cannot save an adapter-disabled reference; its weights are the base checkpoint")
        full = self._full_state_dict()  # FSDP2: every process calls save, the main process writes
        if full is not None and torch.distributed.get_rank() != 0:
            return
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True, **({"state_dict": full} if full is not None else {}))
        self.tokenizer.save_pretrained(out)
        meta = {"kind": "text", "adapter": self.is_peft, "base": self.base if self.is_peft else None,
                "quantization": self.quantization, "chat_template": self.chat_template}
        if self.is_peft and self.base and Path(self.base).is_absolute():
            # relative to the adapter too, so a run tree moved (or copied) as a whole still loads
            meta["base_relative"] = os.path.relpath(self.base, out.resolve())
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    # ----------------------------------------------------------------- hooks for recipes
    # (the TrainablePolicy protocol: callers outside models/ use these, never .model / .tokenizer)
    def train(self, mode: bool = True) -> TextPolicy:
        self.model.train(mode)
        return self

    def eval(self) -> TextPolicy:
        return self.train(False)

    @property
    def training(self) -> bool:
        """Whether the model is in training mode (dropout on)."""
        return bool(self.model.training)

    def freeze(self) -> TextPolicy:
        """No parameter trains any more (a teacher, a judge): eval mode, no gradients, and
        :meth:`trainable_parameters` is empty."""
        self.model.requires_grad_(False)
        self.model.eval()
        self.frozen = True
        return self

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (added tokens included)."""
        return len(self.tokenizer)

    def vocabulary(self) -> dict[str, int]:
        """Token string -> id (two policies share a vocabulary iff these are equal)."""
        return dict(self.tokenizer.get_vocab())

    def decode(self, ids: Sequence[int]) -> str:
        """The text of response token ids (special tokens dropped), as ``sample`` decodes them."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def check_prompts(self, prompts: Sequence[str | Prompt], max_new_tokens: int = 0) -> None:
        """Raise the one-line error ``sample`` would raise if a prompt cannot fit the context with
        ``max_new_tokens`` new tokens, before any work is done."""
        self.encode_prompts(prompts, max_new_tokens)

    def prepare(self, accelerator: Any, *objects: Any) -> tuple[Any, ...]:
        """``accelerator.prepare`` the model together with ``objects`` (optimizer, value model, ...)
        and return the prepared ``objects`` in order. The wrapped module (DDP, DeepSpeed; the model
        itself on one process) is :attr:`prepared_module`; forward passes inside
        :meth:`through_prepared` run through it, so gradients synchronise across processes.
        Sampling, the reference and :meth:`save` keep using the unwrapped model. FSDP2 shards the
        model in place: its parameters become DTensor shards (ask :meth:`trainable_parameters`
        again), :meth:`sample` gathers them (:meth:`gathered`) and :meth:`save` writes the full
        weights from the main process."""
        out = accelerator.prepare(self.model, *objects)
        out = out if isinstance(out, tuple) else (out,)
        self._prepared = out[0]
        return tuple(out[1:])

    @property
    def prepared_module(self) -> torch.nn.Module:
        """The module :meth:`prepare` wrapped (the model itself before ``prepare``)."""
        return self._prepared if self._prepared is not None else self.model

    @contextlib.contextmanager
    def through_prepared(self) -> Iterator[torch.nn.Module]:
        """Within the block, ``score`` / ``logits`` forward through :attr:`prepared_module` (a
        wrapper's call; every other attribute, such as a multimodal model's media hooks, is the
        unwrapped model's); the unwrapped model is back afterwards, also after an exception."""
        original, prepared = self.model, self.prepared_module
        if prepared is not original:
            self.model = _ForwardThrough(prepared, original)
        try:
            yield prepared
        finally:
            self.model = original

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        """Within the block forward passes run on the full parameters without communication (for
        generation). Under FSDP2 each shard unit is all-gathered by its first forward and kept
        until the block ends, so every process must enter the block (as often as the others), but
        inside it processes may run different numbers of forwards (different lengths, early EOS).
        A no-op for a model that is not sharded."""
        units = _fsdp_units(self.model)
        if not units:
            yield
            return
        if units[0] is self.model:  # the root's settings are final (lazy init) before they are saved
            units[0]._get_fsdp_state()._lazy_init()
        states = [u._get_fsdp_state() for u in units]
        saved = [(s._auto_reshard_after_forward, [g.post_forward_mesh_info for g in s._fsdp_param_groups])
                 for s in states]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for unit, state, (auto, infos) in zip(units, states, saved):
                unit.reshard()
                state._auto_reshard_after_forward = auto
                for group, info in zip(state._fsdp_param_groups, infos):
                    group.post_forward_mesh_info = info

    def _full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Under FSDP2 the model's full state dict, gathered on the CPU of the main process (a
        collective: every process calls it; the others get ``{}``); None for a model not sharded."""
        if not _fsdp_units(self.model):
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class _ForwardThrough:
    """The model as a policy sees it inside :meth:`TextPolicy.through_prepared`: calls go through
    the accelerate wrapper (DDP, DeepSpeed), every attribute comes from the unwrapped model."""

    def __init__(self, wrapper: torch.nn.Module, model: torch.nn.Module) -> None:
        self._wrapper, self._model = wrapper, model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _fsdp_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The FSDP2 units of ``model``, the root first (none unless torch.distributed is running)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return []
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]
