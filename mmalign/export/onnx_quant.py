"""Quantize an exported ONNX decoder with onnxruntime's own tools.

Both quantizations are block quantization of the *weights* (``MatMulNBitsQuantizer``): the
weights of every MatMul are stored as ``bits``-bit integers with one fp32 scale per block of
``block_size`` input values and run as ``com.microsoft.MatMulNBits``. No activation is quantized
in the graph; what the kernel does with them is its ``accuracy_level``.

- ``int8``: 8-bit weights, MatMuls only (the embedding table stays fp32: onnxruntime's
  ``GatherBlockQuantized`` takes 4-bit tables only). ``accuracy_level=4``: inside the kernel each
  row of activations is quantized to int8 per block of 32 (its own scale, max|x|/127) and
  multiplied in integers, the scheme of llama.cpp's Q8_0 dot product. Per-block scales keep the
  activation outliers of real checkpoints (SmolLM2-135M: an input maximum of ~3000 against a
  median of 0.07) from flattening their neighbours' blocks. ``accuracy_level=1`` (de-quantize and
  compute in fp32) is closer on SmolLM2 (teacher-forced top-1 98.0% against 96.5%, a third of the
  KL) but decodes ten times slower, slower than PyTorch in fp32 (docs/export.md). The integer
  kernels differ by CPU (AVX2, AVX-VNNI, AVX-512 VNNI); tests/export/test_int8_kernel.py checks on
  the CPU running the suite that the products are exact with the largest codes in every lane,
  where a saturating int16 pair sum would be off by half. Only the order of float sums differs.
- ``int4``: 4-bit weights. MatMuls are quantized with onnxruntime's HQQ (half-quadratic
  quantization: per block of 32, a float scale and a float zero point fitted to minimise the
  reconstruction error, no calibration data); the embedding table becomes ``GatherBlockQuantized``
  (round-to-nearest, symmetric) unless it is tied to the output layer, whose fp32 table stays
  (:func:`shared_table_gathers`). onnxruntime runs float zero points only on its generic,
  de-quantizing kernel, so they are split off into a small fp32 correction
  (:mod:`mmalign.export.zero_point_split`) and the 4-bit MatMuls run on the fast kernel at fp32
  compute (``accuracy_level=1``). On SmolLM2-135M HQQ keeps teacher-forced top-1 at
  99.6% where round-to-nearest gave 71-76% at any block size / accuracy level (docs/export.md;
  that checkpoint's weights come from a Q4_1 GGUF, whose grid HQQ's blocks of 32 re-find).

Why not dynamic int8 (``quantize_dynamic``, int8 activations quantized per tensor at run time):
its ``MatMulInteger`` kernels multiply uint8 by int8 and, on x86 CPUs without VNNI (AVX2 only),
accumulate pairs in saturating int16, so the same file gives different, worse logits on such CPUs
(measured on a toy Llama under an emulated AVX2-only EPYC: teacher-forced top-1 agreement 0.994
with VNNI, 0.969 without). One scale per tensor also cannot hold the outliers above.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx

from mmalign.export.zero_point_split import split_float_zero_points

ONNX_QUANTS = ("fp32", "int8", "int4")

# quant -> passes of (algorithm, bits, ops quantized, accuracy_level); docs/export.md explains the choices
WEIGHT_ONLY = {
    "int8": (("rtn", 8, ("MatMul",), 4),),
    "int4": (("hqq", 4, ("MatMul",), None), ("rtn", 4, ("Gather",), 4)),
}
ALGORITHMS = ("rtn", "hqq")
# int8's compute inside MatMulNBits: "int8" quantizes activations per block (fast, the default),
# "fp32" de-quantizes the weights and multiplies in fp32 (closer to fp32, slower; docs/export.md)
INT8_COMPUTE = {"int8": 4, "fp32": 1}


def shared_table_gathers(model) -> list[str]:
    """Gather nodes whose table another node also reads (tied embeddings: the output projection
    transposes the same initializer). Quantizing such a Gather adds a 4-bit copy next to the fp32
    table the output layer keeps, so the file grows and the input embeddings lose accuracy."""
    weights = {t.name for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in weights:
                readers[name] = readers.get(name, 0) + 1
    return [n.name for n in model.graph.node
            if n.op_type == "Gather" and n.input and readers.get(n.input[0], 0) > 1]


def _quantize_pass(model, algorithm: str, bits: int, ops: tuple[str, ...], level: int | None, block_size: int):
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    axes = tuple((op, 0 if op == "MatMul" else 1) for op in ops)
    if algorithm == "hqq":
        algo = HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits, op_types_to_quantize=ops, quant_axes=axes)
    else:
        algo = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=level,
                                            op_types_to_quantize=ops, quant_axes=axes, bits=bits)
    exclude = shared_table_gathers(model) if "Gather" in ops else []
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True,
                                     accuracy_level=level, op_types_to_quantize=ops, quant_axes=axes,
                                     algo_config=algo, nodes_to_exclude=exclude)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():  # all-zero blocks
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # HQQ's torch
        quantizer.process()
    return quantizer.model.model


def quantize_weight_only(src: Path | onnx.ModelProto, dst: Path, quant: str, *, block_size: int = 32,
                         accuracy_level: int | None = None, algorithm: str | None = None) -> Path:
    """Write ``src`` (an ONNX file, or a model in memory, which is quantized in place) with its
    MatMul (and for int4 Gather) weights block-quantized to ``dst``; ``accuracy_level`` /
    ``algorithm`` (``rtn`` or ``hqq``) override the MatMul pass's defaults."""
    passes = list(WEIGHT_ONLY[quant])
    if accuracy_level is not None or algorithm is not None:
        algo, bits, ops, level = passes[0]
        passes[0] = (algorithm or algo, bits, ops, level if accuracy_level is None else accuracy_level)
    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    previous = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # it logs every node at INFO and an opset notice at WARNING
    try:
        model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src))
        for algo, bits, ops, level in passes:
            if algo not in ALGORITHMS:
                raise ValueError(f"unknown weight-only algorithm {algo!r}")
            model = _quantize_pass(model, algo, bits, ops, level, block_size)
        if any(algo == "hqq" for algo, *_ in passes):
            split_float_zero_points(model)  # HQQ's float zero points: onto the fast kernel
        from onnxruntime.quantization.onnx_model import ONNXModel

        ONNXModel(model).save_model_to_file(str(dst), use_external_data_format=False)
    finally:
        quant_logger.setLevel(previous)
    return dst


def quantize_int8(src: Path, dst: Path, *, compute: str = "int8", **kwargs) -> Path:
    """8-bit weight quantization; ``compute`` (:data:`INT8_COMPUTE`): ``int8`` multiplies per-block
    int8 activations (``accuracy_level=4``), ``fp32`` de-quantized weights (``accuracy_level=1``)."""
    if compute not in INT8_COMPUTE:
        raise ValueError(f"unknown int8 compute {compute!r} (choose from {', '.join(INT8_COMPUTE)})")
    return quantize_weight_only(src, dst, "int8", accuracy_level=INT8_COMPUTE[compute], **kwargs)


def quantize_int4(src: Path, dst: Path, **kwargs) -> Path:
    """4-bit weight-only quantization of MatMuls and the embedding table."""
    return quantize_weight_only(src, dst, "int4", **kwargs)
