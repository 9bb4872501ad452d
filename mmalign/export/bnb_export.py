"""bitsandbytes checkpoints (NF4 / LLM.int8()) for PyTorch deployment.

The model is loaded with a ``BitsAndBytesConfig`` and saved with ``save_pretrained``; the
quantization config travels in ``config.json``, so a plain ``from_pretrained(dir)`` reloads it
quantized. Unlike GGUF / ONNX this still needs torch + bitsandbytes at inference time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

BNB_QUANTS = ("nf4", "int8")


def bnb_config(quant: str):
    import torch
    from transformers import BitsAndBytesConfig

    if quant == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False,
                                  bnb_4bit_compute_dtype=torch.float32)
    return BitsAndBytesConfig(load_in_8bit=True)


def _device_map() -> dict[str, str]:
    import torch

    return {"": "cuda:0"} if torch.cuda.is_available() else {"": "cpu"}


def save_bnb(checkpoint: Path, quant: str, out: Path) -> None:
    """Quantize ``checkpoint`` while loading and save the quantized weights to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(checkpoint, quantization_config=bnb_config(quant),
                                                     device_map=_device_map(), dtype=torch.float32)
        model.save_pretrained(out, safe_serialization=True)


def load_bnb(directory: Path):
    """Reload a saved bitsandbytes checkpoint (quantized layers restored from config.json)."""
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(directory, device_map=_device_map()).eval()
