"""PyTorch -> ONNX with ``torch.onnx.export(dynamo=True)``.

:func:`export_decoder_onnx` writes a causal LM as one graph that serves prefill and decode steps:
inputs ``input_ids``/``attention_mask``/``position_ids`` and flat ``past_key_values.{i}.key|value``,
outputs ``logits`` and ``present.{i}.key|value``, with dynamic batch, sequence and past axes.
:func:`export_module_onnx` exports any module (e.g. a vision encoder + projector) on its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

OPSET = 18


class DecoderWithFlatCache(torch.nn.Module):
    """Wrap a HF causal LM so the KV cache enters and leaves as flat tensors."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=list(zip(past[0::2], past[1::2])), config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True)
        flat: list[torch.Tensor] = []
        for layer in out.cache.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    pasts = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    presents = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *pasts], ["logits", *presents]


def _strip_metadata(model: Any) -> None:
    """Drop per-node stack traces and doc strings the exporter records (they bloat small models)."""
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]


def fold_graph(model: Any) -> None:
    """Constant folding and clean-up of an exported graph (an ``onnx_ir`` model, in place).

    This is what ``torch.onnx.export(optimize=True)`` runs, less onnxscript's pattern rewriter,
    which took about half of SmolLM2-135M's export on 2 cores and only removed no-op Slices,
    which onnxruntime's own graph optimisation handles (docs/export.md).
    """
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import fold_constants_ir

    common.InlinePass()(model)
    for _ in range(2):  # folding can expose more folding; twice, as the full optimiser does
        if not fold_constants_ir(model, onnx_shape_inference=True).modified:
            break
    for cleanup in (common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass(),
                    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                    common.LiftSubgraphInitializersToMainGraphPass(), common.DeduplicateInitializersPass(),
                    common.CommonSubexpressionEliminationPass(), common.OutputFixPass(), common.NameFixPass()):
        cleanup(model)


def _save(model: Any, path: Path) -> None:
    import onnx

    large = model.ByteSize() > 1_800_000_000
    onnx.save_model(model, str(path), save_as_external_data=large,
                    location=path.name + ".data" if large else None)


def _to_proto(program: Any) -> Any:
    """The folded ``onnx.ModelProto`` of an ``ONNXProgram``, without per-node stack traces."""
    fold_graph(program.model)
    model = program.model_proto
    _strip_metadata(model)
    return model


def export_decoder_onnx(model: torch.nn.Module, path: str | Path) -> Path:
    """Export a HF Llama-style causal LM (with KV cache in/out) to ``path``."""
    path = Path(path)
    _save(decoder_onnx_model(model), path)
    return path


def decoder_onnx_model(model: torch.nn.Module) -> Any:
    """A HF Llama-style causal LM (with KV cache in/out) as an in-memory ``onnx.ModelProto``
    (what :func:`export_decoder_onnx` writes; a quantizer can take it without a round trip on disk)."""
    cfg = model.config
    n_layer = cfg.num_hidden_layers
    kv_heads = cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    batch, seq, past_len = 2, 3, 4  # example sizes > 1 so no axis is specialised to a constant
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    mask = torch.ones(batch, past_len + seq, dtype=torch.long)
    pos = torch.arange(past_len, past_len + seq).expand(batch, seq).contiguous()
    past = tuple(torch.zeros(batch, kv_heads, past_len, head_dim) for _ in range(2 * n_layer))
    B, S, P, T = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    shapes = ({0: B, 1: S}, {0: B, 1: T}, {0: B, 1: S}, tuple({0: B, 2: P} for _ in past))
    inputs, outputs = io_names(n_layer)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(DecoderWithFlatCache(model.eval()), (ids, mask, pos, *past),
                                    input_names=inputs, output_names=outputs, dynamic_shapes=shapes,
                                    opset_version=OPSET, dynamo=True, optimize=False, verbose=False)
    return _to_proto(program)


def export_module_onnx(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], path: str | Path, *,
                       input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                       dynamic_shapes: Any = None, dynamic_batch: bool = True) -> Path:
    """Export any module (e.g. a multimodal encoder + projector) to a standalone ONNX graph.

    ``dynamic_shapes`` follows ``torch.export``; by default axis 0 of every input is a dynamic batch
    (give example inputs with batch >= 2 so it is not specialised).
    """
    path = Path(path)
    example_inputs = tuple(example_inputs)
    if dynamic_shapes is None and dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in example_inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), example_inputs, input_names=list(input_names or []) or None,
                                    output_names=list(output_names or []) or None, dynamic_shapes=dynamic_shapes,
                                    opset_version=OPSET, dynamo=True, optimize=False, verbose=False)
    _save(_to_proto(program), path)
    return path

