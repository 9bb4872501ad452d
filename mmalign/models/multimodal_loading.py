"""Build and load multimodal policies.

* :func:`attach_media`: a causal LM + tokenizer + adapter specs → :class:`MultimodalLM` (adds the
  ``<image>``/``<audio>``/``<video>`` special tokens to the tokenizer if it lacks them).
* :func:`load_multimodal_policy`: a directory saved by :meth:`MultimodalPolicy.save` (our adapters,
  ``kind: multimodal``) or any Hugging Face ``AutoModelForImageTextToText`` checkpoint with its
  processor (``kind: native_vlm``; LLaVA-style models).
* :func:`checkpoint_kind`: ``multimodal`` | ``native_vlm`` | ``text`` for a directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmalign.errors import UserError
from mmalign.models.adapters import NativeVisionAdapter, build_adapter
from mmalign.models.media import PLACEHOLDERS
from mmalign.models.multimodal import ADAPTER_WEIGHTS, MultimodalPolicy, freeze_encoders
from mmalign.models.multimodal_lm import MultimodalLM
from mmalign.models.text import META_FILE
from mmalign.utils.device import resolve_device, resolve_dtype
from mmalign.utils.io_errors import check_model_dir, check_tokenizer_dir, reading


def _text_width(lm: torch.nn.Module) -> int:
    return int(lm.get_input_embeddings().weight.shape[1])


def ensure_placeholders(tokenizer: Any, lm: torch.nn.Module, kinds: list[str]) -> dict[str, int]:
    """Token id of each kind's placeholder, adding missing ones as special tokens (and resizing
    the LM's embeddings)."""
    missing = [PLACEHOLDERS[k] for k in kinds if PLACEHOLDERS[k] not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        lm.resize_token_embeddings(len(tokenizer))
    return {k: int(tokenizer.convert_tokens_to_ids(PLACEHOLDERS[k])) for k in kinds}


def attach_media(lm: torch.nn.Module, tokenizer: Any, specs: dict[str, dict], *,
                 train_encoders: bool = False) -> MultimodalLM:
    """Wrap ``lm`` with adapters built from ``specs`` (``{"vision": {...}, "audio": {...}}``)."""
    adapters = {name: build_adapter(name, spec, _text_width(lm)) for name, spec in specs.items()}
    kinds = [k for a in adapters.values() for k in a.kinds]
    token_ids = ensure_placeholders(tokenizer, lm, kinds)
    param = next(lm.parameters())
    model = MultimodalLM(lm, adapters, token_ids, pad_id=tokenizer.pad_token_id)
    model.adapters.to(device=param.device, dtype=param.dtype if param.dtype.is_floating_point else None)
    if not train_encoders:
        freeze_encoders(model)
    return model


def _json_object(path: Path, key: str) -> dict[str, Any]:
    with reading(path, key):
        data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise UserError(f"{key}: {path}: expected a JSON object")
    return data


def checkpoint_kind(path: str | Path, key: str = "model.path") -> str:
    p = Path(path)
    meta = p / META_FILE
    if meta.is_file():
        kind = _json_object(meta, key).get("kind", "text")
        if kind in ("multimodal", "native_vlm"):
            return kind
    config = p / "config.json"
    if config.is_file():
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        model_type = _json_object(config, key).get("model_type")
        if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not (p / ADAPTER_WEIGHTS).is_file():
            return "native_vlm"
    return "text"


def _apply_lora(lm: torch.nn.Module, lora: Any) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(lm, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                         target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))


def load_multimodal_policy(path: str | Path, *, device: str = "auto", dtype: str = "auto", lora: Any = None,
                           train_encoders: bool = False, key: str = "model.path",
                           **policy_kwargs: Any) -> MultimodalPolicy:
    """Load a saved multimodal policy or a native HF VLM (``lora``: a LoraConfig to add adapters);
    ``key`` is the config key that named ``path``, for error messages."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{key}: checkpoint directory not found: {path}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    kind = checkpoint_kind(p, key)
    meta = _json_object(p / META_FILE, key) if (p / META_FILE).is_file() else {}
    if kind == "native_vlm":
        return _load_native(p, dev, dt, lora, key, **policy_kwargs)
    if kind != "multimodal":
        raise UserError(f"{key}: {path} is not a multimodal checkpoint (no media adapters)")
    adapter_dir = p if meta.get("adapter") else None
    base = meta.get("base") if adapter_dir else str(p)
    if adapter_dir is not None and not base:
        raise UserError(f"{path}: a LoRA multimodal checkpoint that names no base model")
    check_model_dir(base, key)
    with reading(base, key, what="model", broad=True):
        lm = AutoModelForCausalLM.from_pretrained(base, dtype=dt).to(dev)
    check_tokenizer_dir(p, key)
    with reading(p, key, what="tokenizer", broad=True):
        tokenizer = AutoTokenizer.from_pretrained(str(p))
    if len(tokenizer) > lm.get_input_embeddings().weight.shape[0]:
        lm.resize_token_embeddings(len(tokenizer))
    if adapter_dir is not None:
        from peft import PeftModel

        with reading(adapter_dir, key, what="LoRA adapter", broad=True):
            lm = PeftModel.from_pretrained(lm, str(adapter_dir), is_trainable=True)
    elif lora is not None and getattr(lora, "enabled", True):
        lm = _apply_lora(lm, lora)
    model = attach_media(lm, tokenizer, meta.get("media_adapters", {}), train_encoders=train_encoders)
    weights = p / ADAPTER_WEIGHTS
    if weights.is_file():
        from safetensors.torch import load_file

        with reading(weights, key):
            state = load_file(str(weights), device=str(dev))
        missing, unexpected = model.adapters.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"{weights}: media adapter weights do not match their specs "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    policy_kwargs.setdefault("chat_template", meta.get("chat_template", "auto"))
    return MultimodalPolicy(model, tokenizer, kind="multimodal", base=str(Path(base).resolve()), **policy_kwargs)


def _load_native(p: Path, dev: torch.device, dt: torch.dtype, lora: Any, key: str,
                 **policy_kwargs: Any) -> MultimodalPolicy:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with reading(p, key, what="vision-language model", broad=True):
        vlm = AutoModelForImageTextToText.from_pretrained(str(p), dtype=dt).to(dev)
        processor = AutoProcessor.from_pretrained(str(p))
    if lora is not None and getattr(lora, "enabled", True):
        vlm = _apply_lora(vlm, lora)
    return native_policy(vlm, processor, base=str(p.resolve()), **policy_kwargs)


def native_policy(vlm: torch.nn.Module, processor: Any, **policy_kwargs: Any) -> MultimodalPolicy:
    """A Policy over an in-memory native VLM and its processor (encoder frozen)."""
    inner = vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm
    adapter = NativeVisionAdapter(inner, processor)
    token_id = int(inner.config.image_token_id)
    model = MultimodalLM(vlm, {"vision": adapter}, {"image": token_id}, pad_id=processor.tokenizer.pad_token_id)
    freeze_encoders(model)
    return MultimodalPolicy(model, processor.tokenizer, kind="native_vlm", processor=processor, **policy_kwargs)
