"""The toy vision + audio policy the multimodal tests share (tiny Llama, toy ViT, toy audio encoder)."""

from __future__ import annotations

from pathlib import Path

import torch

VISION = {
    "model": {"embed_dim": 32,
              "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
              "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}},
    "num_tokens": 4, "projector": "mlp", "num_frames": 3,
}
AUDIO = {"encoder": {"n_mels": 32, "width": 64, "layers": 2, "heads": 2, "pool": 4}, "projector": "linear"}


def save_toy_media_policy(out: Path) -> Path:
    """Build the toy policy (seed 0) and save it to ``out``; returns ``out``."""
    from transformers import LlamaForCausalLM

    from mmalign.models.multimodal import MultimodalPolicy
    from mmalign.models.multimodal_loading import attach_media
    from mmalign.models.toy import (
        DEFAULT_CHAT_TEMPLATE,
        SAMPLE_TEXT,
        tiny_llama_config,
        train_bpe_tokenizer,
    )

    tok = train_bpe_tokenizer(SAMPLE_TEXT * 10, vocab_size=320, chat_template=DEFAULT_CHAT_TEMPLATE,
                              extra_special_tokens=["<image>", "<audio>", "<video>"])
    torch.manual_seed(0)
    lm = LlamaForCausalLM(tiny_llama_config(len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id))
    MultimodalPolicy(attach_media(lm, tok, {"vision": VISION, "audio": AUDIO}), tok).save(out)
    return out
