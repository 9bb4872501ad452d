"""HQQ's float zero points split off into an fp32 correction: the same product, on the fast kernel."""

from __future__ import annotations

import numpy as np
import onnx

from mmalign.export.onnx_quant import _quantize_pass
from mmalign.export.zero_point_split import split_float_zero_points
from tests.export.onnx_graphs import single_matmul

K, N = 96, 40


def _hqq_matmul(rank: int) -> onnx.ModelProto:
    """One MatMul on a rank-``rank`` input, quantized by onnxruntime's HQQ (float zero points)."""
    model = single_matmul(np.random.default_rng(0).standard_normal((K, N)), rank)
    return _quantize_pass(model, "hqq", 4, ("MatMul",), None, 32)


def _run(model: onnx.ModelProto, a: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]


def test_split_gives_the_same_product_without_zero_points():
    rng = np.random.default_rng(1)
    for rank, a in ((2, rng.standard_normal((3, K))), (3, rng.standard_normal((2, 5, K)))):
        hqq = _hqq_matmul(rank)
        (node,) = [n for n in hqq.graph.node if n.op_type == "MatMulNBits"]
        assert len(node.input) == 4  # HQQ wrote float zero points
        split = onnx.ModelProto()
        split.CopyFrom(hqq)
        assert split_float_zero_points(split) == 1
        (kernel,) = [n for n in split.graph.node if n.op_type == "MatMulNBits"]
        assert list(kernel.input)[3:] == []  # default zero point: the kernel's fast path
        assert {i.name for i in split.graph.initializer} == {*kernel.input[1:3], "block_sum_96_32",
                                                             f"{node.input[3]}_correction"}
        a = a.astype(np.float32)
        expected = _run(hqq, a)
        np.testing.assert_allclose(_run(split, a), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_nodes_without_float_zero_points_are_left_alone():
    model = _hqq_matmul(2)
    split_float_zero_points(model)
    before = model.SerializeToString()
    assert split_float_zero_points(model) == 0 and model.SerializeToString() == before
