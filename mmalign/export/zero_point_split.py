"""Run HQQ's 4-bit MatMuls on onnxruntime's fast kernel: split off their float zero points.

HQQ fits a float scale s and a float zero point z per block, W = (Q - z) * s. onnxruntime's
``MatMulNBits`` takes float zero points only on its generic kernel, which de-quantizes every block
in fp32 on each call (SmolLM2-135M decoded at about 2 tok/s). Without zero points the kernel uses
the default z0 = 2^(bits-1) and runs its fast path. Since

    A @ W = A @ ((Q - z0) * s)  +  A @ ((z0 - z) * s)

and the second factor is constant within each block of ``block_size`` input rows, the second term
is (A @ E) @ C, with E [K, K/block] the 0/1 matrix that sums each block of A, and
C[b, n] = (z0 - z[n, b]) * s[n, b]. That is two small fp32 MatMuls (1/block of the FLOPs), and C
takes the place of the zero points in the file, at the same size. The result is the same product up
to float rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _block_sum_matrix(k: int, block: int) -> np.ndarray:
    return np.kron(np.eye(k // block, dtype=np.float32), np.ones((block, 1), dtype=np.float32))


def split_float_zero_points(model: onnx.ModelProto, accuracy_level: int = 1) -> int:
    """Rewrite, in place, every ``MatMulNBits`` of ``model`` whose zero points are a float initializer
    as the kernel without zero points plus the block correction above, with ``accuracy_level`` on
    the kernel; returns how many were rewritten."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    block_sums: dict[tuple[int, int], str] = {}
    rewritten = 0
    for node in graph.node:
        nodes.append(node)
        extra = [name for name in node.input[4:] if name]  # g_idx / bias: leave such nodes alone
        if node.op_type != "MatMulNBits" or len(node.input) < 4 or extra or node.input[3] not in inits:
            continue
        zero_init = inits[node.input[3]]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
        if zero_init.data_type != TensorProto.FLOAT or k % block:
            continue
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, k // block)
        zeros = numpy_helper.to_array(zero_init).reshape(n, k // block)
        correction = np.ascontiguousarray(((2 ** (bits - 1) - zeros) * scales).T, dtype=np.float32)
        if (k, block) not in block_sums:
            block_sums[k, block] = f"block_sum_{k}_{block}"
            graph.initializer.append(numpy_helper.from_array(_block_sum_matrix(k, block), block_sums[k, block]))
        stem = node.output[0]
        correction_name = f"{node.input[3]}_correction"
        graph.initializer.append(numpy_helper.from_array(correction, correction_name))
        del node.input[3:]
        for attr in list(node.attribute):
            if attr.name == "accuracy_level":
                node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute("accuracy_level", accuracy_level))
        node.output[0] = f"{stem}_symmetric"
        nodes += [helper.make_node("MatMul", [node.input[0], block_sums[k, block]], [f"{stem}_block_sums"]),
                  helper.make_node("MatMul", [f"{stem}_block_sums", correction_name], [f"{stem}_zero_point_term"]),
                  helper.make_node("Add", [f"{stem}_symmetric", f"{stem}_zero_point_term"], [stem])]
        rewritten += 1
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten
