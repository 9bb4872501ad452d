"""The int8 ONNX kernel (``MatMulNBits`` bits=8, int8 compute) on the CPU running the suite.

On x86 CPUs without VNNI an int8 dot product is usually built from ``vpmaddubsw``, which adds
pairs of uint8 x int8 products in *saturating* int16 (the reason the old dynamic int8 gave worse
logits on AVX2-only machines). These cases put the largest codes in every lane, where a saturating
kernel would be off by about half; block-quantized with scale max|x|/127, they are exact.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mmalign.export.onnx_quant import WEIGHT_ONLY, quantize_int8
from tests.export.onnx_graphs import single_matmul

K, N = 64, 8
SIGNS = np.where(np.arange(K) % 2 == 0, 1.0, -1.0).astype(np.float32)


@pytest.mark.parametrize("weight,activation", [
    (np.ones((K, N)), np.ones(K)),                      # +127 x +127 in every lane
    (np.ones((K, N)), -np.ones(K)),                     # +127 x -127
    (-np.ones((K, N)), -np.ones(K)),                    # -127 x -127
    (np.repeat(SIGNS[:, None], N, 1), SIGNS),           # alternating signs, all products +
], ids=["pos-pos", "pos-neg", "neg-neg", "alternating"])
@pytest.mark.parametrize("rows", [1, 4], ids=["decode", "prefill"])
def test_int8_compute_does_not_saturate(tmp_path, weight, activation, rows):
    import onnxruntime as ort

    path = quantize_int8(single_matmul(weight), tmp_path / "int8.onnx")
    ops = {(n.op_type, a.i) for n in onnx.load(str(path)).graph.node for a in n.attribute
           if a.name == "accuracy_level"}
    assert ops == {("MatMulNBits", WEIGHT_ONLY["int8"][0][3])}, ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a = np.tile(activation.astype(np.float32), (rows, 1))
    got = session.run(None, {"a": a})[0]
    exact = a @ weight.astype(np.float32)
    # 8-bit codes of +-1 are exact up to the -128/127 asymmetry of a symmetric int8 grid (1 part in 128)
    np.testing.assert_allclose(got, exact, rtol=1 / 100)
