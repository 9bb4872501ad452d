"""Torch-free edge runtime: generate from exported files with onnxruntime, tokenizers and numpy.

Nothing in this package imports torch or transformers (a test checks it in a subprocess), so it
runs where only ``numpy``, ``onnxruntime`` and ``tokenizers`` are installed::

    from mmalign.edge import OnnxLM
    lm = OnnxLM.load("exports/nano-int4")
    print(lm.generate("Human: hi\\n\\nAssistant:", max_new_tokens=32).text)

``python -m mmalign.edge --model DIR --prompt "..."`` does the same from a shell.
:mod:`mmalign.edge.gguf_model` is a NumPy reference runner for the GGUF files (needs ``gguf``).
"""

from __future__ import annotations

from mmalign.edge.onnx_lm import Generation, OnnxLM
from mmalign.edge.sampling import SamplingParams, best_of_n

__all__ = ["Generation", "OnnxLM", "SamplingParams", "best_of_n"]
