"""Llama-architecture Hugging Face weights to a llama.cpp GGUF file (F16, Q8_0 or Q4_0).

Tensor names follow llama.cpp (``token_embd``, ``blk.N.attn_q`` …, ``output_norm``, ``output``).
HF stores Q/K projections for the rotate-half RoPE layout; llama.cpp rotates adjacent pairs, so
the rows of each head are permuted: row ``2i`` ← ``i``, row ``2i+1`` ← ``i + head_dim/2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmalign.errors import UserError
from mmalign.export.tokenizer_meta import TokenizerMeta

QUANTS = ("f16", "q8_0", "q4_0")

# HF parameter suffix (inside model.layers.N.) -> llama.cpp tensor name (inside blk.N.)
_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half Q/K rows -> llama.cpp interleaved pairs (per head)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_to_gguf_name(name: str) -> str | None:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``blk.3.attn_q.weight`` (None: not exported)."""
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers":
        inner = ".".join(parts[3:-1])
        if inner in _LAYER_NAMES:
            return f"blk.{parts[2]}.{_LAYER_NAMES[inner]}.{parts[-1]}"
    return None


def llama_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The architecture numbers GGUF needs, from a HF ``config.json`` dict."""
    n_head = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise UserError(f"config.json: rope type '{rope_type}' is not supported by the GGUF exporter (default RoPE only)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UserError("config.json: attention_bias/mlp_bias Llama variants are not supported by the GGUF exporter")
    return {
        "n_vocab": int(config["vocab_size"]),
        "n_ctx": int(config.get("max_position_embeddings", 2048)),
        "n_embd": hidden,
        "n_layer": int(config["num_hidden_layers"]),
        "n_ff": int(config["intermediate_size"]),
        "n_head": n_head,
        "n_head_kv": int(config.get("num_key_value_heads") or n_head),
        "head_dim": int(config.get("head_dim") or hidden // n_head),
        "rope_theta": float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        "rms_eps": float(config.get("rms_norm_eps", 1e-6)),
        "tied": bool(config.get("tie_word_embeddings", False)),
    }


def _tensor_type(name: str, arr: np.ndarray, quant: str):
    import gguf

    T = gguf.GGMLQuantizationType
    if arr.ndim == 1 or quant == "f32":
        return T.F32
    if quant == "f16":
        return T.F16
    qtype = T.Q8_0 if quant == "q8_0" else T.Q4_0
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if arr.shape[-1] % block == 0 else T.F16  # rows not a block multiple stay F16


def write_gguf(state_dict: dict[str, np.ndarray], config: dict[str, Any], tok: TokenizerMeta, path: Path,
               quant: str, *, name: str = "mmalign-export") -> None:
    """Write a GGUF file at ``path`` from fp32 numpy weights (HF names) and tokenizer metadata."""
    import gguf

    if quant not in QUANTS:
        raise UserError(f"--quant '{quant}' is not a GGUF type (choose from {', '.join(QUANTS)})")
    hp = llama_hparams(config)
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(hp["n_ctx"])
    writer.add_embedding_length(hp["n_embd"])
    writer.add_block_count(hp["n_layer"])
    writer.add_feed_forward_length(hp["n_ff"])
    writer.add_head_count(hp["n_head"])
    writer.add_head_count_kv(hp["n_head_kv"])
    writer.add_rope_freq_base(hp["rope_theta"])
    writer.add_rope_dimension_count(hp["head_dim"])
    if hp["head_dim"] != hp["n_embd"] // hp["n_head"]:
        writer.add_key_length(hp["head_dim"])
        writer.add_value_length(hp["head_dim"])
    writer.add_layer_norm_rms_eps(hp["rms_eps"])
    writer.add_vocab_size(hp["n_vocab"])
    _add_tokenizer(writer, tok.padded(hp["n_vocab"]))

    for hf_name, arr in state_dict.items():
        gname = hf_to_gguf_name(hf_name)
        if gname is None or (gname == "output.weight" and hp["tied"]):
            continue
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if gname.endswith("attn_q.weight"):
            arr = rope_permute(arr, hp["n_head"])
        elif gname.endswith("attn_k.weight"):
            arr = rope_permute(arr, hp["n_head_kv"])
        qtype = _tensor_type(gname, arr, quant)
        with np.errstate(divide="ignore", invalid="ignore"):  # all-zero blocks
            data = gguf.quants.quantize(arr, qtype)
        writer.add_tensor(gname, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer: Any, tok: TokenizerMeta) -> None:
    writer.add_tokenizer_model(tok.model)
    writer.add_tokenizer_pre(tok.pre)
    writer.add_token_list(tok.tokens)
    writer.add_token_types(tok.token_types)
    writer.add_token_merges(tok.merges)
    setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
               "pad": writer.add_pad_token_id, "unk": writer.add_unk_token_id}
    for kind, token_id in tok.special_ids.items():
        setters[kind](int(token_id))
    writer.add_add_bos_token(tok.add_bos)
    writer.add_add_eos_token(tok.add_eos)
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)
