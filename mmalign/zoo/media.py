"""Multimodal tiers: ``specs/{vision,audio,multimodal}/<tier>.yaml`` → adapter specs and
randomly initialised checkpoints (at full or toy width), read with the text tiers' loader.

A ``vision`` or ``audio`` tier is an encoder + projector that ``pairs_with`` a text tier; a
``multimodal`` tier names one text, vision and audio tier. :func:`init_media_checkpoint` writes
a :class:`~mmalign.models.multimodal.MultimodalPolicy` checkpoint; with ``toy=True`` (or any
``width_scale < 1``) each encoder is replaced by its tier's ``toy`` sizes (a ViT of width 64, a
2-layer audio encoder), so tests build every tier in seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmalign.errors import UserError
from mmalign.zoo.text import init_text_checkpoint
from mmalign.zoo.tiers import Tier, get_tier

MEDIA_FAMILIES = ("vision", "audio", "multimodal")


def toy_open_clip_config(toy: dict[str, Any]) -> dict[str, Any]:
    """An open_clip ViT config dict at toy size (text tower minimal; only the visual tower is used)."""
    return {
        "embed_dim": 32,
        "vision_cfg": {"image_size": int(toy.get("image_size", 32)), "layers": int(toy.get("layers", 2)),
                       "width": int(toy.get("width", 64)), "patch_size": int(toy.get("patch_size", 8)),
                       "head_width": int(toy.get("head_width", 32))},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }


def vision_spec(tier: Tier, *, toy: bool = False, pretrained: bool = False) -> dict[str, Any]:
    """The VisionAdapter spec of a vision tier (``pretrained``: load the tier's open_clip weights)."""
    arch = tier.architecture
    spec = {"projector": arch.get("projector", "mlp"), "num_frames": int(arch.get("num_frames", 8))}
    if toy:
        t = arch.get("toy", {})
        spec.update(model=toy_open_clip_config(t), pretrained=None, num_tokens=int(t.get("num_tokens", 4)))
    else:
        spec.update(model=arch["model"], pretrained=arch.get("pretrained") if pretrained else None,
                    num_tokens=int(arch.get("num_tokens", 0)))
    return spec


def audio_spec(tier: Tier, *, toy: bool = False) -> dict[str, Any]:
    """The AudioAdapter spec of an audio tier."""
    arch = tier.architecture
    source = {**arch, **arch.get("toy", {})} if toy else arch
    encoder = {k: int(source[k]) for k in ("n_mels", "width", "layers", "heads", "pool") if k in source}
    return {"projector": arch.get("projector", "mlp"), "max_seconds": float(arch.get("max_seconds", 30)),
            "encoder": encoder}


def media_parts(tier: Tier) -> tuple[Tier, dict[str, Tier]]:
    """(text tier, {"vision": tier, "audio": tier}) of a vision, audio or multimodal tier."""
    arch = tier.architecture
    if tier.family == "multimodal":
        parts = {k: get_tier(arch[k]) for k in ("vision", "audio") if arch.get(k)}
        return get_tier(arch["text"]), parts
    if tier.family in ("vision", "audio"):
        return get_tier(arch.get("pairs_with", "text/nano")), {tier.family: tier}
    raise UserError(f"tier '{tier.full_name}' is not a vision, audio or multimodal tier")


def init_media_checkpoint(tier: Tier | str, out_dir: str | Path, *, texts: Iterable[str] | None = None,
                          vocab_size: int = 512, width_scale: float = 1.0, num_layers: int | None = None,
                          context_length: int | None = None, toy: bool | None = None, pretrained: bool = False,
                          seed: int = 0) -> Path:
    """Write a randomly initialised multimodal checkpoint of ``tier`` to ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmalign.models.media import PLACEHOLDERS
    from mmalign.models.multimodal import MultimodalPolicy
    from mmalign.models.multimodal_loading import attach_media
    from mmalign.models.toy import DEFAULT_CHAT_TEMPLATE, SAMPLE_TEXT, train_bpe_tokenizer

    tier = get_tier(tier) if isinstance(tier, str) else tier
    toy = width_scale < 1 if toy is None else toy
    text_tier, parts = media_parts(tier)
    tokenizer = train_bpe_tokenizer(list(texts) if texts is not None else SAMPLE_TEXT * 20, vocab_size=vocab_size,
                                    chat_template=DEFAULT_CHAT_TEMPLATE,
                                    extra_special_tokens=list(PLACEHOLDERS.values()))
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir, lm_dir = Path(tmp) / "tok", Path(tmp) / "lm"
        tokenizer.save_pretrained(tok_dir)
        init_text_checkpoint(text_tier, lm_dir, vocab_size=vocab_size, width_scale=width_scale,
                             num_layers=num_layers, context_length=context_length, tokenizer_dir=tok_dir, seed=seed)
        lm = AutoModelForCausalLM.from_pretrained(lm_dir)
        tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    specs = {}
    if "vision" in parts:
        specs["vision"] = vision_spec(parts["vision"], toy=toy, pretrained=pretrained)
    if "audio" in parts:
        specs["audio"] = audio_spec(parts["audio"], toy=toy)
    torch.manual_seed(seed)
    model = attach_media(lm, tokenizer, specs)
    out = Path(out_dir)
    MultimodalPolicy(model, tokenizer).save(out)
    return out
