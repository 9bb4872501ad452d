"""A NumPy reference runner for the Llama GGUF files mmalign writes (llama.cpp conventions).

It reads the file with ``gguf.GGUFReader``, dequantizes every tensor with ``gguf.quants`` and runs
the Llama forward pass with llama.cpp's *normal* RoPE: adjacent pairs ``(x[2i], x[2i+1])`` rotate
by ``pos * base^(-2i/d)``. The exporter permuted the Q/K rows into that layout, so logits equal the
PyTorch model's up to quantization — which is what the parity tests check. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class GGUFLlama:
    """Llama forward pass over a GGUF file's (dequantized) weights, with a KV cache."""

    def __init__(self, path: str | Path) -> None:
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(str(path))
        if self._field(reader, "general.architecture") != "llama":
            raise ValueError(f"{path}: not a llama GGUF file")

        def num(key: str, default=None):
            value = self._field(reader, f"llama.{key}")
            return default if value is None else value

        self.n_layer = int(num("block_count"))
        self.n_head = int(num("attention.head_count"))
        self.n_head_kv = int(num("attention.head_count_kv", self.n_head))
        n_embd = int(num("embedding_length"))
        self.head_dim = int(num("attention.key_length", n_embd // self.n_head))
        self.rope_dim = int(num("rope.dimension_count", self.head_dim))
        self.rope_base = float(num("rope.freq_base", 10000.0))
        self.eps = float(num("attention.layer_norm_rms_epsilon", 1e-5))
        self.eos_token_id = self._field(reader, "tokenizer.ggml.eos_token_id")
        self.w: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # ggml ne order -> numpy order
            self.w[t.name] = np.ascontiguousarray(dequantize(t.data, t.tensor_type).reshape(shape), np.float32)
        if "output.weight" not in self.w:  # tied embeddings
            self.w["output.weight"] = self.w["token_embd.weight"]
        self.vocab_size = self.w["output.weight"].shape[0]

    @staticmethod
    def _field(reader, key: str):
        field = reader.get_field(key)
        return None if field is None else field.contents()

    # -- pieces ---------------------------------------------------------------------------------
    def _rms(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Interleaved RoPE on [heads, S, head_dim]: pairs (2i, 2i+1)."""
        d = self.rope_dim
        inv = self.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        ang = positions[:, None].astype(np.float64) * inv[None, :]  # [S, d/2]
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        x_rot, x_pass = x[..., :d], x[..., d:]
        even, odd = x_rot[..., 0::2], x_rot[..., 1::2]
        out = np.empty_like(x_rot)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return np.concatenate([out, x_pass], axis=-1) if x_pass.size else out

    def forward(self, ids: Sequence[int], cache: list[tuple[np.ndarray, np.ndarray]] | None = None
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Logits [S, V] for ``ids`` following ``cache`` (one sequence); returns the extended cache."""
        w = self.w
        ids = np.asarray(ids, dtype=np.int64)
        past = 0 if not cache else cache[0][0].shape[1]
        seq = len(ids)
        pos = np.arange(past, past + seq)
        x = w["token_embd.weight"][ids]
        causal = np.triu(np.full((seq, past + seq), -np.inf, np.float32), k=past + 1)
        group = self.n_head // self.n_head_kv
        new_cache = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._rms(x, w[p + "attn_norm.weight"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(seq, self.n_head, self.head_dim).transpose(1, 0, 2)
            k = (h @ w[p + "attn_k.weight"].T).reshape(seq, self.n_head_kv, self.head_dim).transpose(1, 0, 2)
            v = (h @ w[p + "attn_v.weight"].T).reshape(seq, self.n_head_kv, self.head_dim).transpose(1, 0, 2)
            q, k = self._rope(q, pos), self._rope(k, pos)
            if cache:
                k = np.concatenate([cache[i][0], k], axis=1)
                v = np.concatenate([cache[i][1], v], axis=1)
            new_cache.append((k, v))
            k_rep, v_rep = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
            scores = q @ k_rep.transpose(0, 2, 1) / np.sqrt(self.head_dim) + causal
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attn = (scores / scores.sum(axis=-1, keepdims=True)) @ v_rep  # [H, S, hd]
            x = x + attn.transpose(1, 0, 2).reshape(seq, -1) @ w[p + "attn_output.weight"].T
            h = self._rms(x, w[p + "ffn_norm.weight"])
            gate = h @ w[p + "ffn_gate.weight"].T
            up = h @ w[p + "ffn_up.weight"].T
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        x = self._rms(x, w["output_norm.weight"])
        return x @ w["output.weight"].T, new_cache

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.forward(ids)[0]

    def greedy(self, prompt_ids: Sequence[int], max_new_tokens: int, *, stop_at_eos: bool = False) -> list[int]:
        """Greedy continuation token ids (with a KV cache)."""
        logits, cache = self.forward(prompt_ids)
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = int(logits[-1].argmax())
            out.append(token)
            if stop_at_eos and token == self.eos_token_id:
                break
            logits, cache = self.forward([token], cache)
        return out
