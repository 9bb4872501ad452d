"""GGUF export: llama.cpp names and metadata, the RoPE row permutation, tokenizer, parity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmalign.edge.gguf_model import GGUFLlama
from mmalign.export.verify import compare
from mmalign.models.exported import open_exported

from .conftest import EVAL_PROMPTS, EVAL_TOKENS


@pytest.fixture(scope="package")
def gguf_f16(trained_llama_dir, tmp_path_factory):
    from mmalign.export.api import export_checkpoint

    out = tmp_path_factory.mktemp("gguf") / "f16"
    return out, export_checkpoint(trained_llama_dir, "gguf", "f16", out, eval_count=EVAL_PROMPTS,
                                  eval_tokens=EVAL_TOKENS)


def _write(trained_model, trained_llama_dir, path, quant):
    from mmalign.export.gguf_export import write_gguf
    from mmalign.export.tokenizer_meta import read_tokenizer_meta

    state = {k: v.detach().numpy() for k, v in trained_model.state_dict().items()}
    config = json.loads((trained_llama_dir / "config.json").read_text())
    write_gguf(state, config, read_tokenizer_meta(trained_llama_dir), path, quant)
    return path


def _numpy(path, tokenizer_dir):
    """A bare GGUF file in the NumPy reference runner, with the checkpoint's tokenizer."""
    return open_exported(path, runtime="numpy-gguf", tokenizer=tokenizer_dir)


def test_every_llama_weight_gets_a_llama_cpp_name(trained_model):
    import gguf

    from mmalign.export.gguf_export import hf_to_gguf_name

    known = {name.format(bid=0) for t, name in gguf.TENSOR_NAMES.items() if t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA]}
    for hf_name in trained_model.state_dict():
        gname = hf_to_gguf_name(hf_name)
        assert gname is not None, hf_name
        assert gname.rsplit(".", 1)[0].replace(".1.", ".0.") in known, gname
    assert hf_to_gguf_name("model.layers.3.self_attn.q_proj.weight") == "blk.3.attn_q.weight"


def test_metadata_and_tokenizer(gguf_f16, trained_llama_dir):
    from gguf import GGUFReader
    from tokenizers import Tokenizer

    out, report = gguf_f16
    reader = GGUFReader(str(out / "model-f16.gguf"))

    def field(key):
        return reader.get_field(key).contents()

    cfg = json.loads((trained_llama_dir / "config.json").read_text())
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == cfg["num_hidden_layers"]
    assert field("llama.embedding_length") == cfg["hidden_size"]
    assert field("llama.feed_forward_length") == cfg["intermediate_size"]
    assert field("llama.attention.head_count") == cfg["num_attention_heads"]
    assert field("llama.attention.head_count_kv") == cfg["num_key_value_heads"]
    assert field("llama.context_length") == cfg["max_position_embeddings"]
    assert field("llama.rope.freq_base") == pytest.approx(10000.0)
    assert field("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert field("llama.vocab_size") == cfg["vocab_size"]
    tokens = field("tokenizer.ggml.tokens")
    hf_vocab = Tokenizer.from_file(str(trained_llama_dir / "tokenizer.json")).get_vocab(with_added_tokens=True)
    assert len(tokens) == cfg["vocab_size"] and all(tokens[i] == t for t, i in hf_vocab.items())
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    merges = json.loads((trained_llama_dir / "tokenizer.json").read_text())["model"]["merges"]
    assert field("tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    types = field("tokenizer.ggml.token_type")
    assert types[hf_vocab["<s>"]] == 3 and types[hf_vocab["a"]] == 1  # CONTROL, NORMAL
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id"),
            field("tokenizer.ggml.padding_token_id"), field("tokenizer.ggml.unknown_token_id")) == (
        hf_vocab["<s>"], hf_vocab["</s>"], hf_vocab["<pad>"], hf_vocab["<unk>"])
    assert field("tokenizer.ggml.add_bos_token") is False
    assert "add_generation_prompt" in field("tokenizer.chat_template")
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight", "blk.1.attn_q.weight",
            "blk.1.ffn_down.weight"} <= names
    assert report["files"] == {"model-f16.gguf": (out / "model-f16.gguf").stat().st_size}


def test_f16_logits_match_pytorch(gguf_f16, reference):
    out, report = gguf_f16
    assert report["parity"]["logit_rel_err_max"] < 1e-2
    assert report["parity"]["greedy_agreement"] == 1.0
    assert compare(reference, open_exported(out, runtime="numpy-gguf")).logit_rel_err_max < 1e-2


def test_rope_permutation_is_required(trained_model, trained_llama_dir, reference, tmp_path, monkeypatch):
    """Without the Q/K row permutation llama.cpp's (and our reader's) RoPE gives wrong logits."""
    from mmalign.export import gguf_export

    monkeypatch.setattr(gguf_export, "rope_permute", lambda w, n_head: w)
    unpermuted = compare(reference, _numpy(_write(trained_model, trained_llama_dir, tmp_path / "bad.gguf", "f16"),
                                              trained_llama_dir))
    assert unpermuted.logit_rel_err_max > 0.05


def test_permutation_interleaves_rotate_half_pairs():
    from mmalign.export.gguf_export import rope_permute

    head_dim, n_head = 8, 2
    w = np.arange(n_head * head_dim, dtype=np.float32)[:, None].repeat(3, axis=1)
    rows = rope_permute(w, n_head)[:, 0].astype(int).tolist()
    assert rows == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


def test_q8_0_agrees_and_q4_0_is_reported(trained_model, trained_llama_dir, reference, tmp_path):
    f32_bytes = 4 * sum(p.numel() for p in trained_model.parameters())
    q8 = compare(reference, _numpy(_write(trained_model, trained_llama_dir, tmp_path / "q8.gguf", "q8_0"),
                                      trained_llama_dir))
    # the primary bars; greedy outputs may only part at a near-tie (see test_onnx's int8 test)
    assert q8.teacher_forced_agreement >= 0.98 and q8.mean_kl < 1e-3 and not q8.divergence_margin_max > 0.1, q8
    q4_path = _write(trained_model, trained_llama_dir, tmp_path / "q4.gguf", "q4_0")
    q4 = compare(reference, _numpy(q4_path, trained_llama_dir))
    assert 0 < q4.logit_rel_err_max < 1.0 and q4.teacher_forced_agreement > 0.8
    assert q4_path.stat().st_size <= 0.30 * f32_bytes

    from gguf import GGMLQuantizationType, GGUFReader

    types = {t.name: t.tensor_type for t in GGUFReader(str(q4_path)).tensors}
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q4_0
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32


def test_tied_embeddings_write_no_output_tensor(trained_model, trained_llama_dir, tmp_path):
    from gguf import GGUFReader

    from mmalign.export.gguf_export import write_gguf
    from mmalign.export.tokenizer_meta import read_tokenizer_meta

    state = {k: v.detach().numpy() for k, v in trained_model.state_dict().items()}
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    config = {**json.loads((trained_llama_dir / "config.json").read_text()), "tie_word_embeddings": True}
    path = tmp_path / "tied.gguf"
    write_gguf(state, config, read_tokenizer_meta(trained_llama_dir), path, "f16")
    assert "output.weight" not in {t.name for t in GGUFReader(str(path)).tensors}
    assert GGUFLlama(path).logits([5, 6, 7]).shape == (3, config["vocab_size"])


@pytest.mark.llamacpp
def test_llama_cpp_greedy_matches_pytorch(trained_model, trained_llama_dir, reference, tmp_path):
    """Opt-in (``-m llamacpp``): llama-cpp-python loads the Q8_0 file and decodes like PyTorch."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = _write(trained_model, trained_llama_dir, tmp_path / "q8.gguf", "q8_0")
    parity = compare(reference, open_exported(path, runtime="llama.cpp", tokenizer=trained_llama_dir))
    assert parity.strict_agreement >= 0.95, parity


@pytest.mark.llamacpp
@pytest.mark.parametrize("quant,max_kl", [("f16", 1e-4), ("q8_0", 2e-2)])
def test_export_verifies_gguf_in_llama_cpp(run_cli, trained_llama_dir, tmp_path, quant, max_kl):
    """Opt-in (``-m llamacpp``): with llama-cpp-python installed, `mmalign export --format gguf`
    measures parity in llama.cpp itself, and the file agrees with PyTorch within the issue's bars."""
    import json

    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    out = tmp_path / quant
    code, _, err = run_cli("-q", "export", "--checkpoint", str(trained_llama_dir), "--format", "gguf",
                           "--quant", quant, "--out", str(out), "--eval-count", "4", "--eval-tokens", "8")
    assert code == 0, err
    report = json.loads((out / "export_report.json").read_text())
    parity = report["parity"]
    assert parity["runtime"].startswith("llama.cpp")
    assert parity["mean_kl"] <= max_kl and parity["teacher_forced_agreement"] >= 0.95
