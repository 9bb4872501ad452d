"""The vision/audio-language policy: :class:`~mmalign.models.text.TextPolicy` over a
:class:`~mmalign.models.multimodal_lm.MultimodalLM`.

Only prompt construction changes. Each ``<image>`` / ``<audio>`` / ``<video>`` placeholder in a
prompt's text takes the next media item of that kind (``Prompt.media``, in order) and becomes a
run of placeholder ids, one per feature vector; the features fill those positions on the
full-sequence passes. Sampling (prefix-shared: one prefill per prompt), scoring, the reference,
LoRA and the CTRL / best-of-N / evaluation code are the text policy's, unchanged (prefix-shared
scoring supplies the media through ``_prefix_inputs``). Encoders run
ONCE per distinct prompt of a call: a best-of-N over N samples, or scoring N rows of one prompt,
encodes its media once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mmalign.errors import ConfigError, DataError, UserError
from mmalign.models.media import KINDS, PLACEHOLDERS, describe, split_by_kind
from mmalign.models.multimodal_lm import MultimodalLM
from mmalign.models.policy import Prompt, Samples, SequenceBatch, as_prompt
from mmalign.models.text import META_FILE, TRAINABLE_SCOPES, TextPolicy

ADAPTER_WEIGHTS = "media_adapters.safetensors"

Prepared = dict[str, list[torch.Tensor]]  # kind -> prepared items of one prompt, in order


class MultimodalPolicy(TextPolicy):
    """A Policy whose prompts may carry images, audio and video (see the module docstring)."""

    model: MultimodalLM

    def __init__(self, model: MultimodalLM, tokenizer: Any, *, kind: str = "multimodal", processor: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.kind = kind  # "multimodal" (our adapters) | "native_vlm" (a HF VLM)
        self.processor = processor
        self._active: tuple[Any, list[Prepared]] | None = None
        for k, tid in model.token_ids.items():
            if tokenizer.convert_ids_to_tokens(tid) != PLACEHOLDERS[k]:
                raise ConfigError(f"tokenizer: {PLACEHOLDERS[k]} is not the special token {tid}")

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model.lm, "peft_config") and hasattr(self.model.lm, "disable_adapter")

    # ----------------------------------------------------------------- media
    def prepare_media(self, prompts: Sequence[str | Prompt]) -> list[Prepared]:
        """Read and preprocess every prompt's media, checking it against the placeholders."""
        if self._active is not None and self._active[0] is prompts:
            return self._active[1]
        out = []
        for i, raw in enumerate(prompts):
            p = as_prompt(raw)
            where = describe(p, i)
            groups = split_by_kind(p.media, where)
            prepared: Prepared = {}
            for kind in KINDS:
                want = p.text.count(PLACEHOLDERS[kind])
                have = len(groups[kind])
                if want != have:
                    raise DataError(f"{where}: {want} {PLACEHOLDERS[kind]} placeholder(s) in the text but "
                                    f"{have} {kind} item(s)")
                if not have:
                    continue
                adapter = self.model.adapter_for(kind)
                if adapter is None:
                    raise DataError(f"{where}: has {kind} input but this policy has no {kind} encoder")
                prepared[kind] = [adapter.prepare(kind, item, where) for item in groups[kind]]
            out.append(prepared)
        return out

    def media_features(self, prepared: Sequence[Prepared]) -> dict[str, list[torch.Tensor]]:
        """Features per kind and prompt (``[tokens, width]``): one encoder call per adapter."""
        width = self.model.lm.get_input_embeddings().weight.shape[1]
        feats: dict[str, list[torch.Tensor]] = {}
        for adapter in self.model.adapters.values():
            items = [(kind, t) for prep in prepared for kind in adapter.kinds for t in prep.get(kind, [])]
            encoded = iter(adapter.encode(items)) if items else iter(())
            for kind in adapter.kinds:
                feats[kind] = []
            for prep in prepared:
                per_kind: dict[str, list[torch.Tensor]] = {k: [] for k in adapter.kinds}
                for kind in adapter.kinds:
                    for _ in prep.get(kind, []):
                        per_kind[kind].append(next(encoded))
                for kind in adapter.kinds:
                    rows = per_kind[kind]
                    feats[kind].append(torch.cat(rows) if rows else torch.zeros(0, width, device=self.device))
        return feats

    @contextlib.contextmanager
    def _media_call(self, prompts: Sequence[str | Prompt], rows: Sequence[int] | None = None) -> Iterator[None]:
        """Prepare and encode the prompts' media once; expose it to the model for the block
        (``rows[r]`` = prompt of forward row r; default: one row per prompt)."""
        prepared = self.prepare_media(prompts)
        with self._context():
            feats = self.media_features(prepared)
        if rows is not None:
            feats = {k: [v[int(i)] for i in rows] for k, v in feats.items()}
        previous = self._active
        self._active = (prompts, prepared)
        try:
            with self.model.media_features(feats):
                yield
        finally:
            self._active = previous

    # ----------------------------------------------------------------- tokens
    def encode_prompts(self, prompts: Sequence[str | Prompt], max_new_tokens: int = 0) -> list[list[int]]:
        prepared = self.prepare_media(prompts)
        ids = super().encode_prompts([Prompt(text=as_prompt(p).text) for p in prompts], max_new_tokens)
        limit = self.prompt_limit(max_new_tokens)
        out = []
        for i, (seq, prep, raw) in enumerate(zip(ids, prepared, prompts)):
            p = as_prompt(raw)
            for kind, tid in self.model.token_ids.items():
                if seq.count(tid) != p.text.count(PLACEHOLDERS[kind]):
                    raise DataError(f"{describe(p, i)}: {p.text.count(PLACEHOLDERS[kind])} "
                                    f"{PLACEHOLDERS[kind]} in the text but {seq.count(tid)} after tokenising "
                                    f"(a truncated prompt, or a tokenizer without the special token?)")
            expanded: list[int] = []
            cursor = {k: 0 for k in self.model.token_ids}
            by_id = {tid: k for k, tid in self.model.token_ids.items()}
            for tok in seq:
                kind = by_id.get(tok)
                if kind is None:
                    expanded.append(tok)
                    continue
                item = prep[kind][cursor[kind]]
                cursor[kind] += 1
                adapter = self.model.adapter_for(kind)
                expanded.extend([tok] * adapter.num_tokens(kind, item))
            if len(expanded) > limit:
                raise UserError(f"{describe(p, i)}: {len(expanded)} tokens with its media but at most {limit} fit "
                                f"the context; use fewer media items or a tier with fewer tokens per item")
            out.append(expanded)
        return out

    def encode(self, prompts: Sequence[str | Prompt], responses: Sequence[str], *,
               add_eos: bool = False) -> SequenceBatch:
        batch = super().encode(prompts, responses, add_eos=add_eos)
        media_ids = torch.tensor(sorted(self.model.token_ids.values()), device=batch.response_ids.device)
        bad = torch.isin(batch.response_ids, media_ids) & batch.response_mask.bool()
        if bool(bad.any()):
            r = int(bad.any(1).nonzero()[0])
            raise DataError(f"{describe(as_prompt(prompts[r]), r)}: the response contains a media placeholder")
        return batch

    # ----------------------------------------------------------------- forward passes
    def _full_logits(self, batch: SequenceBatch) -> torch.Tensor:
        index = batch.prompt_index.tolist()
        used = sorted(set(index))  # encode only the prompts these rows belong to, once each
        position = {p: j for j, p in enumerate(used)}
        with self._media_call([batch.prompts[p] for p in used], rows=[position[p] for p in index]):
            return super()._full_logits(batch)

    def _prefix_inputs(self, batch: SequenceBatch, first: torch.Tensor):
        # the shared-prefix prompt pass of score(): one forward row per distinct prompt, so its
        # media is encoded once; the response pass runs on the cache and needs no features
        return self._media_call([batch.prompts[int(p)] for p in batch.prompt_index[first].tolist()])

    def sample(self, prompts: Sequence[str | Prompt], n: int = 1, **kwargs: Any) -> Samples:
        if not prompts:
            raise UserError("no prompts to sample from")
        with self._media_call(prompts):
            return super().sample(prompts, n, **kwargs)

    # ----------------------------------------------------------------- training scope
    def set_trainable(self, scope: str = "all") -> None:
        """``projector``: only the media projectors train (LM and encoders frozen), LLaVA's first
        stage; ``all``: the LM (its LoRA adapters only, for a LoRA policy) and the projectors train.
        Encoders keep their current setting (frozen unless loaded with ``train_encoders``)."""
        if scope not in TRAINABLE_SCOPES:
            raise ConfigError(f"train.trainable: must be one of {', '.join(TRAINABLE_SCOPES)}; got '{scope}'")
        if self.frozen:
            raise UserError("cannot train a frozen reference policy")
        encoder_params = [p for a in self.model.adapters.values() for m in a.encoder_modules() for p in m.parameters()]
        encoders_frozen = [not p.requires_grad for p in encoder_params]
        self.model.requires_grad_(False)
        if scope == "all":
            for name, p in self.model.lm.named_parameters():
                p.requires_grad_("lora_" in name if self.is_peft else True)
        for p, frozen in zip(encoder_params, encoders_frozen):  # native VLMs hold the tower inside lm
            p.requires_grad_(not frozen and scope == "all")
        projectors = [m for a in self.model.adapters.values() for m in a.projector_modules()]
        if scope == "projector" and not projectors:
            raise ConfigError("train.trainable: 'projector' but this model has no media projector")
        for module in projectors:
            module.requires_grad_(True)

    # ----------------------------------------------------------------- accelerate
    def prepare(self, accelerator: Any, *objects: Any) -> tuple[Any, ...]:
        """As :meth:`TextPolicy.prepare` (DDP and DeepSpeed; :meth:`through_prepared` forwards
        through the wrapper and reads the media hooks from the unwrapped model). FSDP is refused:
        :meth:`save` would write the media adapters' shards, not their full weights."""
        if getattr(accelerator, "distributed_type", None) == "FSDP":  # accelerate's DistributedType is a str enum
            raise UserError("FSDP is not supported for multimodal policies (saving does not gather the media "
                            "adapters' shards); use DDP (configs/accelerate/ddp.yaml) or DeepSpeed ZeRO-2")
        return super().prepare(accelerator, *objects)

    # ----------------------------------------------------------------- reference, saving
    def _sibling(self, model: torch.nn.Module) -> MultimodalPolicy:
        other = MultimodalPolicy(model, self.tokenizer, kind=self.kind, processor=self.processor,
                                 chat_template=self.chat_template, max_prompt_tokens=self.max_prompt_tokens,
                                 truncation=self.truncation, reference_mode=self.reference_mode, base=self.base,
                                 quantization=self.quantization)
        other.frozen = True
        return other

    def save(self, directory: str | Path) -> None:
        """The LM (full weights or LoRA adapter) in HF format, the tokenizer (and processor), the
        media adapters' weights in ``media_adapters.safetensors`` and their specs in
        ``mmalign_policy.json``."""
        from safetensors.torch import save_file

        if self.adapters_disabled:
            raise UserError("cannot save an adapter-disabled reference; its weights are the base checkpoint")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.lm.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        if self.processor is not None:
            self.processor.save_pretrained(out)
        specs = {}
        if self.kind == "multimodal":
            state = {k: v.detach().contiguous().cpu() for k, v in self.model.adapters.state_dict().items()}
            save_file(state, str(out / ADAPTER_WEIGHTS))
            specs = {name: a.spec for name, a in self.model.adapters.items()}
        meta = {"kind": self.kind, "adapter": self.is_peft, "base": self.base if self.is_peft else None,
                "quantization": self.quantization, "chat_template": self.chat_template, "media_adapters": specs}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def freeze_encoders(model: MultimodalLM) -> None:
    """Freeze every adapter's encoder (the LLaVA default: towers are not trained)."""
    for adapter in model.adapters.values():
        for module in adapter.encoder_modules():
            module.requires_grad_(False)
