"""bitsandbytes checkpoints: NF4 / int8 saved with save_pretrained and reloaded by from_pretrained."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("quant,layer_type", [("nf4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_bnb_checkpoint_reloads_quantized(run_cli, trained_llama_dir, tmp_path, quant, layer_type):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / quant
    code, _, err = run_cli("-q", "export", "--checkpoint", str(trained_llama_dir), "--format", "bnb",
                           "--quant", quant, "--out", str(out), "--eval-count", "3", "--eval-tokens", "8")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "bitsandbytes"
    model = AutoModelForCausalLM.from_pretrained(out, device_map={"": "cpu"})
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == layer_type
    reference = AutoModelForCausalLM.from_pretrained(trained_llama_dir)
    ids = torch.tensor([[5, 17, 40, 41, 90]])
    with torch.no_grad():
        got, want = model(ids).logits, reference(ids).logits
    assert ((got - want).abs().max() / want.abs().max()).item() < 0.3
    report = json.loads((out / "export_report.json").read_text())
    assert report["parity"]["runtime"] == f"pytorch-bnb-{quant}"
    assert report["size_bytes"] < report["source_weights_bytes"]
    assert (out / "tokenizer.json").is_file() and (out / "mmalign_export.json").is_file()
