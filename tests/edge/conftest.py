"""An fp32 ONNX export of the tiny Llama for the edge-runner tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def onnx_export_dir(tiny_llama_dir, tmp_path_factory):

    from mmalign.export.api import export_checkpoint

    out = tmp_path_factory.mktemp("edge") / "nano-onnx"
    export_checkpoint(tiny_llama_dir, "onnx", "fp32", out, verify=False)
    return out
