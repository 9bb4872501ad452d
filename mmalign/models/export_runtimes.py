"""The runtimes an exported model runs in, behind one NumPy-level interface.

* :class:`OnnxRuntime`: an ``mmalign export --format onnx`` directory through onnxruntime
  (:class:`mmalign.edge.OnnxLM`, KV cache in and out, batched).
* :class:`NumpyGGUFRuntime`: a GGUF file through the NumPy reference forward pass
  (:class:`mmalign.edge.gguf_model.GGUFLlama`, one sequence at a time).
* :class:`LlamaCppRuntime`: a GGUF file in llama.cpp (llama-cpp-python, when installed): the
  runtime the file is deployed with.

Each gives full-sequence logits, a reusable prefix state (a KV cache), logits of suffixes after it,
and one-token decoding steps from a state (``start`` / ``step``). A runtime whose state can hold
several sequences (``batched = True``: ONNX) also decodes ``n`` rows of one prompt together:
``start_rows`` prefills the prompt once and repeats its cache, ``step_rows`` advances every row by
one token in one pass, and ``keep_rows`` drops the rows that have finished.
:mod:`mmalign.models.exported` puts the Policy's scoring interface on top.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmalign.errors import UserError


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python can be imported (an optional, compiled dependency)."""
    return importlib.util.find_spec("llama_cpp") is not None


class OnnxRuntime:
    """An ONNX export directory (graph contract in :mod:`mmalign.edge.onnx_lm`)."""

    name = "onnxruntime"
    tolerance = 1e-3
    batched = True

    def __init__(self, directory: str | Path) -> None:
        from mmalign.edge.onnx_lm import OnnxLM

        self.lm = OnnxLM(directory)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.lm.logits(list(ids))

    def prefix(self, ids: Sequence[int]) -> list[np.ndarray]:
        return self.lm.forward(np.asarray([list(ids)]), self.lm.empty_past(1))[1]

    def suffix_logits(self, suffixes: Sequence[Sequence[int]], state: list[np.ndarray] | None,
                      pad_id: int) -> list[np.ndarray]:
        """One batched pass over the right-padded suffixes, each after ``state``."""
        width = max(len(s) for s in suffixes)
        ids = np.full((len(suffixes), width), pad_id, dtype=np.int64)
        for i, s in enumerate(suffixes):
            ids[i, :len(s)] = s
        past = self.lm.empty_past(len(suffixes)) if state is None else [np.repeat(p, len(suffixes), axis=0) for p in state]
        logits, _ = self.lm.forward(ids, past)
        return [logits[i, :len(s)] for i, s in enumerate(suffixes)]

    def start(self, ids: Sequence[int]) -> tuple[np.ndarray, Any]:
        logits, past = self.lm.forward(np.asarray([list(ids)]), self.lm.empty_past(1))
        return logits[0, -1], past

    def step(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        logits, past = self.lm.forward(np.asarray([[token]]), state)
        return logits[0, -1], past

    def start_rows(self, ids: Sequence[int], n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Next-token logits [n, V] after the prompt ``ids`` (prefilled once) and a state of ``n`` rows."""
        logits, past = self.lm.forward(np.asarray([list(ids)]), self.lm.empty_past(1))
        return np.repeat(logits[:, -1], n, axis=0), [np.repeat(p, n, axis=0) for p in past]

    def step_rows(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [B, V] after each row's next token ``tokens`` [B], in one batched pass."""
        logits, past = self.lm.forward(np.asarray(tokens, dtype=np.int64)[:, None], state)
        return logits[:, -1], past

    def keep_rows(self, state: list[np.ndarray], rows: Sequence[int]) -> list[np.ndarray]:
        """The state of the rows ``rows`` only (the others have finished)."""
        index = np.asarray(rows, dtype=np.int64)
        return [p[index] for p in state]


class NumpyGGUFRuntime:
    """A Llama GGUF file through the NumPy reference runner (slow, exact to llama.cpp's layout)."""

    name = "numpy-gguf"
    tolerance = 1e-3
    batched = False

    def __init__(self, path: str | Path) -> None:
        from mmalign.edge.gguf_model import GGUFLlama

        self.model = GGUFLlama(path)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self.model.logits(list(ids))

    def prefix(self, ids: Sequence[int]) -> list:
        return self.model.forward(list(ids))[1]

    def suffix_logits(self, suffixes: Sequence[Sequence[int]], state: list | None, pad_id: int) -> list[np.ndarray]:
        return [self.model.forward(list(s), state or None)[0] for s in suffixes]

    def start(self, ids: Sequence[int]) -> tuple[np.ndarray, Any]:
        logits, cache = self.model.forward(list(ids))
        return logits[-1], cache

    def step(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        logits, cache = self.model.forward([token], state)
        return logits[-1], cache


class LlamaCppRuntime:
    """A GGUF file in llama.cpp. Its one context holds one sequence: a state is the token ids the
    context must start with; evaluating after it drops the context's tokens beyond it
    (``Llama.eval`` does) and re-runs the prefix only if something else ran in between."""

    name = "llama.cpp"
    tolerance = 5e-2  # batch shapes pick different quantised kernels
    batched = False  # one context, one sequence

    def __init__(self, path: str | Path, n_ctx: int = 2048) -> None:
        if not llama_cpp_available():
            raise UserError(f"{path}: running a GGUF file in llama.cpp needs llama-cpp-python "
                            "(pip install llama-cpp-python)")
        from llama_cpp import Llama

        self.n_ctx = n_ctx
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                         n_threads=os.cpu_count() or 1)

    def _eval_after(self, state: tuple[int, ...], ids: Sequence[int]) -> None:
        """Evaluate ``ids`` after the tokens ``state`` (their logits land in ``llm.scores``)."""
        start = len(state)
        if start + len(ids) > self.n_ctx:
            raise UserError(f"{start + len(ids)} tokens exceed llama.cpp's context of {self.n_ctx}")
        if self.llm.n_tokens < start or tuple(self.llm.input_ids[:start].tolist()) != state:
            self.llm.reset()
            if state:
                self.llm.eval(list(state))
        self.llm.n_tokens = start
        self.llm.eval(list(ids))

    def _run_after(self, state: tuple[int, ...], ids: Sequence[int]) -> np.ndarray:
        """Logits [len(ids), V] of ``ids`` evaluated after the tokens ``state``."""
        self._eval_after(state, ids)
        return np.array(self.llm.scores[len(state):len(state) + len(ids)], dtype=np.float32)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return self._run_after((), ids)

    def prefix(self, ids: Sequence[int]) -> tuple[int, ...]:
        state = tuple(int(t) for t in ids)
        self._eval_after((), state)
        return state

    def suffix_logits(self, suffixes: Sequence[Sequence[int]], state: tuple[int, ...] | None,
                      pad_id: int) -> list[np.ndarray]:
        return [self._run_after(state or (), s) for s in suffixes]

    def start(self, ids: Sequence[int]) -> tuple[np.ndarray, Any]:
        state = tuple(int(t) for t in ids)
        return self._run_after((), state)[-1], state

    def step(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        return self._run_after(state, [token])[0], (*state, int(token))
