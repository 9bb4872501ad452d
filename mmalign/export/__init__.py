"""Edge export of Llama-architecture text policies: GGUF, ONNX (fp32 / int8 / int4) and
bitsandbytes checkpoints, each verified against the PyTorch model after export.

Entry points (imported lazily so ``import mmalign.export`` stays cheap):

- :func:`mmalign.export.api.export_checkpoint` — one export plus its verification report.
- :func:`mmalign.export.onnx_export.export_module_onnx` — any ``nn.Module`` (e.g. a vision encoder
  + projector) to a standalone ONNX graph.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_checkpoint", "export_module_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_checkpoint":
        from mmalign.export.api import export_checkpoint

        return export_checkpoint
    if name == "export_module_onnx":
        from mmalign.export.onnx_export import export_module_onnx

        return export_module_onnx
    raise AttributeError(name)
