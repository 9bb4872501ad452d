"""Toy multimodal policies and media files, built locally at toy width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models.multimodal.toy_policy import save_toy_media_policy


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """Two images, a 3-frame video directory, a 16 kHz and an 8 kHz WAV, a FLAC, and broken files."""
    import soundfile as sf
    from PIL import Image

    d = tmp_path_factory.mktemp("media")
    Image.new("RGB", (32, 32), (220, 30, 30)).save(d / "red.png")
    Image.new("RGB", (40, 24), (30, 30, 220)).save(d / "blue.jpg")
    (d / "clip").mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32), (50 * i, 0, 0)).save(d / "clip" / f"f{i}.png")
    t = np.arange(8000) / 16000
    sf.write(d / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 16000)
    sf.write(d / "slow.wav", (0.3 * np.sin(2 * np.pi * 440 * t[:4000])).astype("float32"), 8000)
    sf.write(d / "tone.flac", (0.3 * np.sin(2 * np.pi * 880 * t)).astype("float32"), 16000)
    (d / "broken.png").write_bytes(b"this is not an image")
    (d / "broken.wav").write_bytes(b"RIFF garbage")
    return d


@pytest.fixture(scope="session")
def mm_policy_dir(tmp_path_factory) -> Path:
    """A toy vision+audio policy (tiny Llama + toy ViT + toy audio encoder), saved."""
    return save_toy_media_policy(tmp_path_factory.mktemp("mm_policy"))


@pytest.fixture
def mm_policy(mm_policy_dir):
    from mmalign.models.multimodal_loading import load_multimodal_policy

    return load_multimodal_policy(mm_policy_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A tiny LLaVA (CLIP vision 2 layers width 32 + Llama 2 layers width 64) and its processor, saved."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from mmalign.models.toy import SAMPLE_TEXT, tiny_llama_config, train_bpe_tokenizer

    tok = train_bpe_tokenizer(SAMPLE_TEXT * 10, vocab_size=320, extra_special_tokens=["<image>"])
    text = tiny_llama_config(len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         image_seq_length=16, vision_feature_layer=-1)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1)
    out = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
