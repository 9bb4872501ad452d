"""ONNX export: graph contract, fp32 parity, int8 / int4 quantization, KV-cache decoding."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mmalign.edge import OnnxLM
from mmalign.export.verify import compare
from mmalign.models.loading import load_policy


def _quantized_copy(fp32_dir, dst, quant):
    """An int8/int4 export dir made from the shared fp32 export (skips a second torch export)."""
    from mmalign.export.onnx_quant import quantize_int4, quantize_int8

    shutil.copytree(fp32_dir, dst, ignore=shutil.ignore_patterns("model.onnx", "export_report.*"))
    (quantize_int8 if quant == "int8" else quantize_int4)(fp32_dir / "model.onnx", dst / "model.onnx")
    manifest = json.loads((dst / "mmalign_export.json").read_text())
    manifest["quant"] = quant
    (dst / "mmalign_export.json").write_text(json.dumps(manifest))
    return dst


def test_graph_has_kv_cache_io_with_dynamic_axes(onnx_fp32):
    import onnx

    out, _ = onnx_fp32
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert list(inputs)[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert inputs["input_ids"] == ["batch", "seq"]
    assert inputs["past_key_values.1.value"][0] == "batch" and isinstance(inputs["past_key_values.1.value"][2], str)
    assert set(outputs) == {"logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"}
    assert outputs["logits"][:2] == ["batch", "seq"]


def test_fp32_onnx_logits_match_pytorch(onnx_fp32, reference):
    out, report = onnx_fp32
    parity = report["parity"]
    assert parity["logit_rel_err_max"] < 1e-3
    assert parity["greedy_agreement"] == 1.0
    assert parity["mean_kl"] < 1e-6
    assert (out / "export_report.md").read_text().count("logit_rel_err_max") == 1
    # and independently of the report, against the package-wide reference
    assert compare(reference, load_policy(out), name="fp32").logit_rel_err_max < 1e-3


def test_kv_cache_decoding_matches_full_pass_with_left_padding(onnx_fp32):
    lm = OnnxLM(onnx_fp32[0])
    ids = lm.encode("Human: What is the capital of France?")
    full = lm.logits(ids)
    logits, past = lm.forward(np.asarray([ids[:5]]), lm.empty_past(1))
    for i, token in enumerate(ids[5:], start=5):
        step, past = lm.forward(np.asarray([[token]]), past)
        np.testing.assert_allclose(step[0, -1], full[i], atol=1e-4)
    # batch of two, the shorter one left-padded: its logits equal its own unpadded pass
    short = ids[:4]
    pad = lm.manifest.pad_token_id
    batch = np.asarray([[pad] * (len(ids) - 4) + short, ids])
    mask = np.asarray([[0] * (len(ids) - 4) + [1] * 4, [1] * len(ids)])
    out, _ = lm.forward(batch, lm.empty_past(2), attention_mask=mask)
    np.testing.assert_allclose(out[0, -1], lm.logits(short)[-1], atol=1e-4)
    np.testing.assert_allclose(out[1], full, atol=1e-4)


def _ops(path) -> dict[str, list[int]]:
    """op type -> the ``bits`` attribute of each such node (0 where it has none); a MatMul whose
    weight is a stored float initializer counts as ``"MatMul(weight)"``."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    ops: dict[str, list[int]] = {}
    for node in graph.node:
        bits = [a.i for a in node.attribute if a.name == "bits"]
        kind = "MatMul(weight)" if node.op_type == "MatMul" and set(node.input) & weights else node.op_type
        ops.setdefault(kind, []).append(bits[0] if bits else 0)
    return ops


def test_int8_quantizes_every_matmul_weight_and_agrees(onnx_fp32, reference, tmp_path):
    fp32_dir, _ = onnx_fp32
    int8_dir = _quantized_copy(fp32_dir, tmp_path / "int8", "int8")
    int8 = compare(reference, load_policy(int8_dir), name="int8")
    assert int8.teacher_forced_agreement >= 0.98 and int8.logit_rel_err_max < 0.05, int8
    # Free-running greedy outputs may part at the toy model's near-ties, which the CPU's own float
    # rounding moves (on an AVX2-only EPYC one prompt left at a margin of 0.009, greedy agreement 0.92;
    # with VNNI none did): each divergence must start at a near-tie, not at a confident choice.
    assert not int8.divergence_margin_max > 0.1, int8  # nan: none left
    assert 0 < int8.mean_kl < 1e-3, int8  # quantized, so not identical, but close in distribution
    # no per-tensor run-time activation quantization (MatMulInteger's saturating int16 pairs on AVX2
    # without VNNI, one scale for a whole tensor): every MatMul is an 8-bit MatMulNBits, whose kernel
    # quantizes activations per block of 32 (tests/export/test_int8_kernel.py)
    ops = _ops(int8_dir / "model.onnx")
    assert not {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"} & set(ops), sorted(ops)
    assert ops.get("MatMulNBits") and set(ops["MatMulNBits"]) == {8} and "MatMul(weight)" not in ops, sorted(ops)
    assert (int8_dir / "model.onnx").stat().st_size <= 0.45 * (fp32_dir / "model.onnx").stat().st_size


def _accuracy_levels(path) -> set[int]:
    import onnx

    return {a.i for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"
            for a in n.attribute if a.name == "accuracy_level"}


def test_int8_fp32_compute_is_chosen_by_the_cli_and_recorded(run_cli, trained_llama_dir, onnx_fp32, reference,
                                                              tmp_path, monkeypatch):
    import onnx

    from mmalign.export import onnx_export

    fp32_dir, _ = onnx_fp32
    assert _accuracy_levels(_quantized_copy(fp32_dir, tmp_path / "default", "int8") / "model.onnx") == {4}
    monkeypatch.setattr(onnx_export, "decoder_onnx_model", lambda model: onnx.load(str(fp32_dir / "model.onnx")))
    out = tmp_path / "int8-fp32"
    code, stdout, err = run_cli("-q", "export", "--checkpoint", str(trained_llama_dir), "--format", "onnx",
                                "--quant", "int8", "--int8-compute", "fp32", "--out", str(out),
                                "--eval-count", "2", "--eval-tokens", "4")
    assert code == 0, err
    assert _accuracy_levels(out / "model.onnx") == {1}  # de-quantize and multiply in fp32
    report = json.loads((out / "export_report.json").read_text())
    assert report["int8_compute"] == "fp32" and report["parity_floor"]["passed"]
    fp32_compute = compare(reference, load_policy(out), name="int8 fp32 compute")
    assert fp32_compute.teacher_forced_agreement >= 0.98 and 0 < fp32_compute.mean_kl < 1e-3, fp32_compute


def test_int4_is_small_and_agrees(onnx_fp32, reference, tmp_path):
    fp32_dir, _ = onnx_fp32
    int4_dir = _quantized_copy(fp32_dir, tmp_path / "int4", "int4")
    int4 = compare(reference, load_policy(int4_dir), name="int4")
    assert 0 < int4.logit_rel_err_max < 1.0
    assert int4.teacher_forced_agreement > 0.8
    size4 = (int4_dir / "model.onnx").stat().st_size
    assert size4 <= 0.30 * (fp32_dir / "model.onnx").stat().st_size

    ops = _ops(int4_dir / "model.onnx")
    assert set(ops["MatMulNBits"]) == {4} and "GatherBlockQuantized" in ops


def test_export_cli_int4_writes_report(run_cli, trained_llama_dir, onnx_fp32, tmp_path, monkeypatch):
    import onnx

    from mmalign.export import onnx_export

    # reuse the fp32 graph instead of a second torch.onnx export (the slow part); the rest is real
    monkeypatch.setattr(onnx_export, "decoder_onnx_model", lambda model: onnx.load(str(onnx_fp32[0] / "model.onnx")))
    out = tmp_path / "int4"
    code, stdout, err = run_cli("-q", "export", "--checkpoint", str(trained_llama_dir), "--format", "onnx",
                                "--quant", "int4", "--out", str(out), "--eval-count", "2", "--eval-tokens", "4")
    assert code == 0, err
    assert "onnx int4" in stdout and "greedy agreement" in stdout
    report = json.loads((out / "export_report.json").read_text())
    assert report["quant"] == "int4" and report["parity"]["prompts"] == 2 and report["parity"]["new_tokens"] == 4
    assert report["size_ratio_vs_fp32"] <= 0.30
    assert report["parity"]["tokens_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["chat_template.jinja", "export_report.json", "export_report.md", "mmalign_export.json", "model.onnx",
         "tokenizer.json", "tokenizer_config.json"])


def test_export_module_onnx_generic_encoder(tmp_path):
    import onnxruntime as ort
    import torch

    from mmalign.export.onnx_export import export_module_onnx

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.Flatten(2))

    class EncoderProjector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.proj = encoder, torch.nn.Linear(8, 16)

        def forward(self, pixels):
            return self.proj(self.encoder(pixels).transpose(1, 2))

    module = EncoderProjector().eval()
    example = torch.randn(2, 3, 16, 16)
    path = export_module_onnx(module, (example,), tmp_path / "vision.onnx", input_names=["pixel_values"],
                              output_names=["image_embeds"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 16, 16)  # a different batch size: the batch axis is dynamic
    (got,) = sess.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        want = module(x).numpy()
    assert got.shape == (3, 16, 16)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_int8_full_protocol_20x32(trained_llama_dir, tmp_path):
    """The acceptance protocol (20 prompts x 32 tokens) through the real export path."""
    from mmalign.export.api import export_checkpoint

    report = export_checkpoint(trained_llama_dir, "onnx", "int8", tmp_path / "int8", eval_count=20, eval_tokens=32,
                               greedy_count=20)
    parity = report["parity"]
    assert parity["teacher_forced_agreement"] >= 0.98 and parity["mean_kl"] < 1e-2  # the primary bars
    # free-running greedy on every prompt is secondary: one near-tie flip ends the row's agreement
    # (0.92 on the chat-templated prompts when written)
    assert parity["greedy_prompts"] == parity["prompts"] and parity["greedy_agreement"] >= 0.85
    assert not parity["divergence_margin_max"] > 0.1  # and each flip was at a near-tie
