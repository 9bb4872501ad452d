"""Tiny ONNX graphs for kernel-level export tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def single_matmul(weight: np.ndarray, rank: int = 2) -> onnx.ModelProto:
    """``y = a @ weight`` on a rank-``rank`` float input ``a`` (dynamic leading axes)."""
    k, n = weight.shape
    shape = [None] * (rank - 1) + [k]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape[:-1] + [n])],
                              [numpy_helper.from_array(weight.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
