"""Bad input gives one-line errors (exit 2); a failed export leaves nothing behind."""

from __future__ import annotations

import shutil

import pytest


def _assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmalign: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tiny_llama_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=384)).save_pretrained(out)
    shutil.copy2(tiny_llama_dir / "tokenizer.json", out / "tokenizer.json")
    return out


def test_unsupported_architecture(run_cli, gpt2_dir, tmp_path):
    code, _, err = run_cli("export", "--checkpoint", str(gpt2_dir), "--format", "gguf", "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "unsupported architecture", "GPT2LMHeadModel")
    assert not (tmp_path / "o").exists()


def test_missing_tokenizer(run_cli, tiny_llama_dir, tmp_path):
    ckpt = tmp_path / "no_tok"
    shutil.copytree(tiny_llama_dir, ckpt, ignore=shutil.ignore_patterns("tokenizer*"))
    code, _, err = run_cli("export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "missing tokenizer.json")


def test_missing_checkpoint_and_bad_quant(run_cli, tiny_llama_dir, tmp_path):
    code, _, err = run_cli("export", "--checkpoint", str(tmp_path / "nope"), "--format", "gguf",
                           "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "not found")
    code, _, err = run_cli("export", "--checkpoint", str(tiny_llama_dir), "--format", "gguf", "--quant", "int4",
                           "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "--quant 'int4'", "f16, q8_0, q4_0")
    code, _, err = run_cli("export", "--checkpoint", str(tiny_llama_dir), "--format", "tflite",
                           "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "--format 'tflite'")
    code, _, err = run_cli("export", "--checkpoint", str(tiny_llama_dir), "--format", "onnx", "--quant", "int4",
                           "--int8-compute", "fp32", "--out", str(tmp_path / "o"))
    _assert_one_line_error(code, err, "--int8-compute fp32", "--quant int8 only")
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli("export", "--checkpoint", str(tiny_llama_dir), "--format", "gguf",
                           "--out", str(tmp_path / "o"), "--eval-prompts", str(tmp_path / "none.txt"))
    _assert_one_line_error(code, err, "eval prompts file not found")


def test_existing_output_needs_overwrite(run_cli, tiny_llama_dir, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli("export", "--checkpoint", str(tiny_llama_dir), "--format", "gguf", "--out", str(out))
    _assert_one_line_error(code, err, "exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    code, stdout, err = run_cli("-q", "export", "--checkpoint", str(tiny_llama_dir), "--format", "gguf", "--quant",
                                "q8_0", "--out", str(out), "--overwrite", "--eval-count", "2", "--eval-tokens", "4")
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "model-q8_0.gguf").is_file()
    assert "gguf q8_0" in stdout


@pytest.mark.parametrize("fail_at", ["writer", "verify"])
def test_failed_export_leaves_nothing(tiny_llama_dir, tmp_path, monkeypatch, fail_at):
    from mmalign.export import api, gguf_export

    if fail_at == "writer":
        real = gguf_export.write_gguf

        def half_written(state, config, tok, path, quant, **kw):
            real(state, config, tok, path, quant, **kw)
            with open(path, "r+b") as fh:  # a truncated file, then the failure
                fh.truncate(100)
            raise RuntimeError("disk full")

        monkeypatch.setattr(gguf_export, "write_gguf", half_written)
    else:
        monkeypatch.setattr(api, "_verify", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    parent = tmp_path / "exports"
    parent.mkdir()
    with pytest.raises(RuntimeError):
        api.export_checkpoint(tiny_llama_dir, "gguf", "f16", parent / "nano", eval_count=1, eval_tokens=2)
    assert list(parent.iterdir()) == []  # no output dir, no temporary sibling


def test_failed_overwrite_keeps_previous_export(tiny_llama_dir, tmp_path, monkeypatch):
    from mmalign.export import api

    out = tmp_path / "nano"
    api.export_checkpoint(tiny_llama_dir, "gguf", "q4_0", out, verify=False)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(api, "_verify", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        api.export_checkpoint(tiny_llama_dir, "gguf", "f16", out, overwrite=True, eval_count=1, eval_tokens=2)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["nano"]


def test_lora_adapter_is_merged_before_export(tiny_llama_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mmalign.edge.gguf_model import GGUFLlama
    from mmalign.export.api import export_checkpoint

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    base.config._name_or_path = str(tiny_llama_dir)
    torch.manual_seed(1)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    shutil.copy2(tiny_llama_dir / "tokenizer.json", adapter / "tokenizer.json")
    ids = [5, 17, 40, 41]
    with torch.no_grad():
        merged_logits = peft_model(torch.tensor([ids])).logits[0].numpy()
        with peft_model.disable_adapter():
            base_logits = peft_model(torch.tensor([ids])).logits[0].numpy()
    report = export_checkpoint(adapter, "gguf", "f16", tmp_path / "out", verify=False)
    got = GGUFLlama(tmp_path / "out" / "model-f16.gguf").logits(ids)
    assert abs(got - merged_logits).max() / abs(merged_logits).max() < 1e-2
    assert abs(got - base_logits).max() > 10 * abs(got - merged_logits).max()
    assert report["source"] == str(adapter)
