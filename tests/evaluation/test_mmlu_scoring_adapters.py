"""Every scoring adapter gives MMLU the answers of the Hugging Face one: an ONNX export, a GGUF
export in the NumPy runner and (opt-in) in llama.cpp; and MMLU's log-likelihoods are the policy's
own per-token ``score`` summed, so the fast path changes no number."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.evaluation.mmlu.data import load_mmlu, sample_dir
from mmalign.evaluation.mmlu.scorer import score_loglik, subject_rows
from mmalign.models.loading import load_policy

SUBJECTS = ["astronomy", "philosophy"]


@pytest.fixture(scope="module")
def hf_policy(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(hf_policy):
    data = load_mmlu(sample_dir())
    return data, {k: score_loglik(hf_policy, data, SUBJECTS, shots=k, limit=4) for k in (0, 2)}


def _same(a, b, tol):
    for s in SUBJECTS:
        assert [r.pred for r in a[s]] == [r.pred for r in b[s]]
        for x, y in zip(a[s], b[s]):
            assert x.lls == pytest.approx(y.lls, abs=tol)


def test_loglikelihoods_are_the_policys_own_token_scores(hf_policy, reference):
    """The shared-prefix fast path against the plain per-token interface (``policy.score`` on a
    SequenceBatch of the same token ids, one row per choice, nothing shared)."""
    data, ref = reference
    for k in (0, 2):
        subject = SUBJECTS[1]
        rows = [r for rs in subject_rows(hf_policy, subject, data.get("dev", subject)[:k], data.get("test", subject)[:4])
                for r in rs]
        batch = hf_policy.batch_from_ids(["q"] * len(rows), [r.context for r in rows], [r.cont for r in rows])
        with torch.no_grad():
            lls = hf_policy.score(batch, shared_prefix=False).sum(dim=1).tolist()
        assert [ll for q in ref[k][subject] for ll in q.lls] == pytest.approx(lls, abs=1e-4)


def test_onnx_export_matches_hf(tiny_llama_dir, reference, tmp_path, run_cli):
    pytest.importorskip("onnxruntime")
    from mmalign.export.api import export_checkpoint
    from mmalign.models.exported import ExportedPolicy

    export_checkpoint(tiny_llama_dir, "onnx", "fp32", tmp_path / "onnx", verify=False)
    policy = load_policy(tmp_path / "onnx")  # the factory dispatches on the export's manifest
    assert isinstance(policy, ExportedPolicy) and policy.runtime_name == "onnxruntime"
    assert policy.max_length == 512
    data, ref = reference
    stats: dict[str, int] = {}
    for k in (0, 2):
        _same(score_loglik(policy, data, SUBJECTS, shots=k, limit=4, stats=stats), ref[k], 1e-3)
    assert stats["prefix_tokens"] > 0 and stats["prefix_check_failures"] == 0
    # the same through the CLI, given the .onnx file
    code, out, err = run_cli("evaluate", "mmlu", "--model", str(tmp_path / "onnx" / "model.onnx"), "--data",
                             str(sample_dir()), "--subjects", ",".join(SUBJECTS), "--shots", "2", "--limit", "4",
                             "-q", "--out", str(tmp_path / "eval"))
    assert code == 0, err
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    for s in SUBJECTS:
        assert res["subjects"][s]["acc"] == sum(r.acc for r in ref[2][s]) / 4
    assert res["scoring_stats"]["prefix_tokens"] > 0


def test_lm_eval_adapter_takes_an_export(tiny_llama_dir, tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from mmalign.evaluation.lm_eval_adapter import MMAlignLM
    from mmalign.export.api import export_checkpoint

    export_checkpoint(tiny_llama_dir, "onnx", "fp32", tmp_path / "onnx", verify=False)
    requests = [Instance("loglikelihood", {}, ("Answer:", " A"), 0), Instance("loglikelihood", {}, ("", "Paris"), 1)]
    got = MMAlignLM(pretrained=str(tmp_path / "onnx")).loglikelihood(requests)
    want = MMAlignLM(pretrained=str(tiny_llama_dir)).loglikelihood(requests)
    assert [g for _, g in got] == [g for _, g in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-4)


def test_gguf_export_matches_hf_through_the_numpy_runner(tiny_llama_dir, reference, tmp_path):
    """The export directory of a GGUF f16 export, scored by the NumPy GGUF runner: same answers,
    log-likelihoods within f16 rounding."""
    pytest.importorskip("gguf")
    from mmalign.export.api import export_checkpoint
    from mmalign.models.exported import open_exported

    export_checkpoint(tiny_llama_dir, "gguf", "f16", tmp_path / "gguf", verify=False)
    policy = open_exported(tmp_path / "gguf", runtime="numpy-gguf")
    data, ref = reference
    _same(score_loglik(policy, data, SUBJECTS, shots=0, limit=4), ref[0], 2e-2)


@pytest.mark.llamacpp
def test_gguf_via_llama_cpp(tiny_llama_dir, reference, tmp_path):
    """With llama-cpp-python installed the factory runs a GGUF export in llama.cpp; fed the export's
    Hugging Face tokens it gives the same answers, log-likelihoods within f16 rounding."""
    pytest.importorskip("llama_cpp")
    from mmalign.export.api import export_checkpoint

    # f16: the GGUF exporter writes f16 / q8_0 / q4_0 ("f32" is refused with a one-line error)
    export_checkpoint(tiny_llama_dir, "gguf", "f16", tmp_path / "gguf", verify=False)
    policy = load_policy(tmp_path / "gguf")
    assert policy.runtime_name == "llama.cpp"
    data, ref = reference
    stats: dict[str, int] = {}
    _same(score_loglik(policy, data, SUBJECTS, shots=0, limit=4, stats=stats), ref[0], 2e-2)
    assert stats["prefix_tokens"] > 0 and stats["prefix_check_failures"] == 0
