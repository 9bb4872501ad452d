"""Generate from an exported ONNX decoder (KV cache in/out) with onnxruntime + tokenizers + NumPy.

Graph contract (written by :mod:`mmalign.export.onnx_export`): inputs ``input_ids``,
``attention_mask``, ``position_ids`` (int64) and ``past_key_values.{i}.key|value``
([batch, kv_heads, past, head_dim]); outputs ``logits`` and ``present.{i}.key|value``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from mmalign.edge.manifest import Manifest
from mmalign.edge.sampling import SamplingParams, best_of_n, choose


@dataclass
class Generation:
    """One continuation: its text, token ids, per-token log-probs and why it stopped."""

    text: str
    token_ids: list[int]
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "eos" | "length"
    seconds: float = 0.0


class OnnxLM:
    """A causal LM exported by ``mmalign export --format onnx``."""

    def __init__(self, directory: str | Path, *, threads: int = 0) -> None:
        self.directory = Path(directory)
        self.manifest = Manifest.read(self.directory)
        if self.manifest.format != "onnx":
            raise ValueError(f"{self.directory}: a '{self.manifest.format}' export, not onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.directory / self.manifest.model_file), opts,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(self.directory / self.manifest.tokenizer_file))
        self._past_names = [f"past_key_values.{i}.{kv}" for i in range(self.manifest.num_layers)
                            for kv in ("key", "value")]
        self._past_dtype = np.float16 if "float16" in self.session.get_inputs()[3].type else np.float32

    @classmethod
    def load(cls, directory: str | Path, **kwargs) -> OnnxLM:
        return cls(directory, **kwargs)

    # -- tokens ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- forward --------------------------------------------------------------------------------
    def empty_past(self, batch: int) -> list[np.ndarray]:
        m = self.manifest
        return [np.zeros((batch, m.num_kv_heads, 0, m.head_dim), self._past_dtype) for _ in self._past_names]

    def forward(self, input_ids: np.ndarray, past: list[np.ndarray],
                attention_mask: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One step: logits [B, S, V] for ``input_ids`` [B, S] after ``past``; returns the new cache."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        batch, seq = input_ids.shape
        start = past[0].shape[2]
        if attention_mask is None:
            attention_mask = np.ones((batch, start + seq), np.int64)
        positions = np.cumsum(attention_mask, axis=-1)[:, -seq:] - 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask.astype(np.int64),
                 "position_ids": np.maximum(positions, 0).astype(np.int64)}
        feeds.update(zip(self._past_names, past))
        outputs = self.session.run(None, feeds)
        return outputs[0], outputs[1:]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits [S, V] of a whole sequence in one pass (used for parity checks)."""
        logits, _ = self.forward(np.asarray([ids]), self.empty_past(1))
        return logits[0]

    # -- generation -----------------------------------------------------------------------------
    def generate_ids(self, prompt_ids: Sequence[int], *, max_new_tokens: int = 32, n: int = 1,
                     params: SamplingParams = SamplingParams(), seed: int = 0,
                     stop_at_eos: bool = True) -> list[Generation]:
        """``n`` continuations of one prompt; the prompt is prefilled once and its cache shared."""
        if not prompt_ids:
            raise ValueError("empty prompt (encode at least one token)")
        rng = np.random.default_rng(seed)
        eos = set(self.manifest.eos_token_ids) if stop_at_eos else set()
        start = time.perf_counter()
        logits, past = self.forward(np.asarray([prompt_ids]), self.empty_past(1))
        past = [np.repeat(p, n, axis=0) for p in past] if n > 1 else past
        last = np.repeat(logits[:, -1], n, axis=0)
        tokens = np.zeros((n, 0), np.int64)
        logps = np.zeros((n, 0))
        done = np.zeros(n, bool)
        finish = ["length"] * n
        for step in range(max_new_tokens):
            ids, lp = choose(last, params, rng)
            tokens = np.concatenate([tokens, ids[:, None]], axis=1)
            logps = np.concatenate([logps, lp[:, None]], axis=1)
            for row in np.flatnonzero(~done):
                if int(ids[row]) in eos:
                    done[row] = True
                    finish[row] = "eos"
            if done.all() or step == max_new_tokens - 1:
                break
            logits, past = self.forward(ids[:, None], past)
            last = logits[:, -1]
        seconds = time.perf_counter() - start
        out = []
        for row in range(n):
            ids_row = tokens[row].tolist()
            if finish[row] == "eos":
                ids_row = ids_row[: ids_row.index(next(t for t in ids_row if t in eos)) + 1]
            out.append(Generation(self.decode(ids_row), ids_row, logps[row, : len(ids_row)].tolist(),
                                  finish[row], seconds))
        return out

    def generate(self, prompt: str, *, max_new_tokens: int = 32, params: SamplingParams = SamplingParams(),
                 seed: int = 0) -> Generation:
        """Greedy (default) or sampled continuation of ``prompt``."""
        return self.generate_ids(self.encode(prompt), max_new_tokens=max_new_tokens, params=params, seed=seed)[0]

    def sample(self, prompt: str, n: int, *, max_new_tokens: int = 32,
               params: SamplingParams = SamplingParams(greedy=False), seed: int = 0) -> list[Generation]:
        return self.generate_ids(self.encode(prompt), max_new_tokens=max_new_tokens, n=n, params=params, seed=seed)

    def best_of_n(self, prompt: str, n: int, score: Callable[[Generation], float], *, max_new_tokens: int = 32,
                  params: SamplingParams = SamplingParams(greedy=False), seed: int = 0
                  ) -> tuple[Generation, list[float]]:
        """Draw ``n`` samples and keep the one ``score`` ranks highest."""
        return best_of_n(self.sample(prompt, n, max_new_tokens=max_new_tokens, params=params, seed=seed), score)
