"""Backends agree with the Hugging Face fast path: a generic Policy, an ONNX export, GGUF (opt-in)."""

from __future__ import annotations

import pytest

from mmalign.evaluation.mmlu.backends import EdgeBackend, HFBackend, PolicyBackend
from mmalign.evaluation.mmlu.data import load_mmlu, sample_dir
from mmalign.evaluation.mmlu.scorer import score_loglik

SUBJECTS = ["astronomy", "philosophy"]


@pytest.fixture(scope="module")
def reference(tiny_llama_dir):
    data = load_mmlu(sample_dir())
    return data, {k: score_loglik(HFBackend.from_pretrained(tiny_llama_dir), data, SUBJECTS, shots=k, limit=4) for k in (0, 2)}


def _same(a, b, tol):
    for s in SUBJECTS:
        assert [r.pred for r in a[s]] == [r.pred for r in b[s]]
        for x, y in zip(a[s], b[s]):
            assert x.lls == pytest.approx(y.lls, abs=tol)


def test_policy_backend_matches_hf(tiny_llama_dir, reference):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmalign.models.text import TextPolicy

    data, ref = reference
    policy = TextPolicy(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir))
    backend = PolicyBackend(policy)  # the generic path: policy.score on a SequenceBatch
    for k in (0, 2):
        _same(score_loglik(backend, data, SUBJECTS, shots=k, limit=4, batch_size=5), ref[k], 1e-4)


def test_onnx_export_matches_hf(tiny_llama_dir, reference, tmp_path):
    pytest.importorskip("onnxruntime")
    from mmalign.evaluation.mmlu.backends import open_backend
    from mmalign.export.api import export_checkpoint

    export_checkpoint(tiny_llama_dir, "onnx", "fp32", tmp_path / "onnx", verify=False)
    backend = open_backend(str(tmp_path / "onnx"))
    assert isinstance(backend, EdgeBackend) and backend.max_length == 512
    data, ref = reference
    for k in (0, 2):
        _same(score_loglik(backend, data, SUBJECTS, shots=k, limit=4), ref[k], 1e-3)
    assert backend.stats["prefix_tokens"] > 0


def test_gguf_export_matches_hf_through_the_edge_runtime(tiny_llama_dir, reference, tmp_path):
    """The export directory of a GGUF f16 export, scored by the NumPy GGUF runner: same answers,
    log-likelihoods within f16 rounding."""
    pytest.importorskip("gguf")
    from mmalign.evaluation.mmlu.backends import open_backend
    from mmalign.export.api import export_checkpoint

    export_checkpoint(tiny_llama_dir, "gguf", "f16", tmp_path / "gguf", verify=False)
    backend = open_backend(str(tmp_path / "gguf"))
    assert isinstance(backend, EdgeBackend)
    data, ref = reference
    _same(score_loglik(backend, data, SUBJECTS, shots=0, limit=4), ref[0], 2e-2)


@pytest.mark.llamacpp
def test_gguf_via_llama_cpp(tiny_llama_dir, reference, tmp_path):
    pytest.importorskip("llama_cpp")
    from mmalign.evaluation.mmlu.backends import GGUFBackend
    from mmalign.export.api import export_checkpoint

    # f16: the GGUF exporter writes f16 / q8_0 / q4_0 ("f32" is refused with a one-line error)
    export_checkpoint(tiny_llama_dir, "gguf", "f16", tmp_path / "gguf", verify=False)
    backend = GGUFBackend(next((tmp_path / "gguf").glob("*.gguf")), n_ctx=512)
    data, ref = reference
    got = score_loglik(backend, data, SUBJECTS, shots=0, limit=4)
    agree = sum(x.pred == y.pred for s in SUBJECTS for x, y in zip(got[s], ref[0][s]))
    assert agree >= 7  # llama.cpp's own tokenizer may split a few contexts differently
