"""Quantize an exported ONNX decoder with onnxruntime's own tools.

Both quantizations are *weight-only* block quantization (``MatMulNBitsQuantizer``): the weights
of every MatMul are stored as ``bits``-bit integers with one fp32 scale per block of
``block_size`` input values and run as ``com.microsoft.MatMulNBits``; activations stay float.

- ``int8``: 8-bit weights, MatMuls only (the embedding table stays fp32: onnxruntime's
  ``GatherBlockQuantized`` takes 4-bit tables only). ``accuracy_level=1``: onnxruntime computes in
  fp32 from the de-quantized blocks, so results do not depend on the CPU.
- ``int4``: 4-bit weights, and the embedding table becomes ``GatherBlockQuantized``.
  ``accuracy_level=4`` lets onnxruntime compute in int8 on CPU.

Why not dynamic int8 (``quantize_dynamic``, int8 activations quantized per tensor at run time):
its ``MatMulInteger`` kernels multiply uint8 by int8 and, on x86 CPUs without VNNI (AVX2 only),
accumulate pairs in saturating int16, so the same file gives different, worse logits on such CPUs
(measured on a toy Llama under an emulated AVX2-only EPYC: teacher-forced top-1 agreement 0.994
with VNNI, 0.969 without). Per-tensor activation scales also break on real checkpoints whose
activations have outliers (SmolLM2-135M: an input maximum of ~3000 against a median of 0.07).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

ONNX_QUANTS = ("fp32", "int8", "int4")

# quant -> (bits, ops quantized, accuracy_level); docs/export.md explains the choices
WEIGHT_ONLY = {
    "int8": (8, ("MatMul",), 1),
    "int4": (4, ("MatMul", "Gather"), 4),
}


def quantize_weight_only(src: Path, dst: Path, quant: str, *, block_size: int = 32,
                         accuracy_level: int | None = None) -> Path:
    """Write ``src`` with its MatMul (and for int4 Gather) weights block-quantized to ``dst``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    bits, ops, default_level = WEIGHT_ONLY[quant]
    level = default_level if accuracy_level is None else accuracy_level
    axes = tuple((op, 0 if op == "MatMul" else 1) for op in ops)
    algo = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=level,
                                        op_types_to_quantize=ops, quant_axes=axes, bits=bits)
    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    previous = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # it logs every node at INFO and an opset notice at WARNING
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=block_size, is_symmetric=True,
                                         accuracy_level=level, op_types_to_quantize=ops, quant_axes=axes,
                                         algo_config=algo)
        with np.errstate(divide="ignore", invalid="ignore"):  # all-zero blocks
            quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    finally:
        quant_logger.setLevel(previous)
    return dst


def quantize_int8(src: Path, dst: Path, **kwargs) -> Path:
    """8-bit weight-only quantization (fp32 compute: the same logits on every CPU)."""
    return quantize_weight_only(src, dst, "int8", **kwargs)


def quantize_int4(src: Path, dst: Path, **kwargs) -> Path:
    """4-bit weight-only quantization of MatMuls and the embedding table."""
    return quantize_weight_only(src, dst, "int4", **kwargs)
