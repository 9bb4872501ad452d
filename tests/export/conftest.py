"""Export fixtures: a tiny Llama briefly trained on repetitive text (so greedy decoding has clear
margins and parity of quantized exports is meaningful), its PyTorch reference outputs on the
held-out prompts, and one fp32 ONNX export shared by the tests of this package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EVAL_PROMPTS = 10
EVAL_TOKENS = 16


def train_tiny_llama(src: Path, out: Path, steps: int = 60, lr: float = 1e-2) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmalign.models.toy import SAMPLE_TEXT

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    torch.manual_seed(0)
    batch = tok(SAMPLE_TEXT, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5, "toy training did not converge"
    model.eval().save_pretrained(out, safe_serialization=True)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy2(f, out / f.name)
    return out


@pytest.fixture(scope="package")
def trained_llama_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    return train_tiny_llama(tiny_llama_dir, tmp_path_factory.mktemp("trained_llama"))


@pytest.fixture(scope="package")
def trained_model(trained_llama_dir):
    from mmalign.export.source import open_checkpoint

    with open_checkpoint(trained_llama_dir) as ckpt:
        return ckpt.load_model()


@pytest.fixture(scope="package")
def reference(trained_llama_dir, trained_model):
    """PyTorch greedy continuations + logits on the held-out prompts (computed once), from the
    checkpoint's TextPolicy: the source side of every parity check."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from mmalign.export.prompts import load_prompts
    from mmalign.export.verify import run_reference
    from mmalign.models.text import TextPolicy

    tok = Tokenizer.from_file(str(trained_llama_dir / "tokenizer.json"))
    ids = [tok.encode(p).ids for p in load_prompts(None, EVAL_PROMPTS)]
    source = TextPolicy(trained_model, AutoTokenizer.from_pretrained(trained_llama_dir)).freeze()
    return run_reference(source, ids, EVAL_TOKENS)


@pytest.fixture(scope="package")
def onnx_fp32(trained_llama_dir, tmp_path_factory):
    """(directory, report) of an fp32 ONNX export with its verification, made through the CLI."""
    import json

    from mmalign.cli.main import main

    out = tmp_path_factory.mktemp("onnx") / "fp32"
    code = main(["-q", "export", "--checkpoint", str(trained_llama_dir), "--format", "onnx", "--quant", "fp32",
                 "--out", str(out), "--eval-count", str(EVAL_PROMPTS), "--eval-tokens", str(EVAL_TOKENS)])
    assert code == 0
    return out, json.loads((out / "export_report.json").read_text())
