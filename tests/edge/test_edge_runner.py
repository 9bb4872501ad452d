"""The torch-free edge runner: imports, generation, sampling, best-of-N, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmalign.edge import OnnxLM, SamplingParams
from mmalign.edge.sampling import choose, filtered_logprobs, log_softmax

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_runner_generates_without_torch_in_the_import_graph(onnx_export_dir):
    code = """
import sys, json
import mmalign.edge, mmalign.edge.gguf_model, mmalign.edge.__main__
from mmalign.edge import OnnxLM, SamplingParams
lm = OnnxLM(sys.argv[1])
g = lm.generate("Human: hello", max_new_tokens=6)
s = lm.sample("Human: hello", 2, max_new_tokens=4, params=SamplingParams(greedy=False, top_p=0.9), seed=1)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft", "accelerate"))
print(json.dumps({"ids": g.token_ids, "n": len(s), "heavy": heavy}))
"""
    proc = _python(code, str(onnx_export_dir))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert len(result["ids"]) == 6 and result["n"] == 2
    assert result["ids"] == OnnxLM(onnx_export_dir).generate("Human: hello", max_new_tokens=6).token_ids


def test_greedy_matches_pytorch(onnx_export_dir, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    lm = OnnxLM(onnx_export_dir)
    ids = lm.encode("The quick brown fox")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        want = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, min_new_tokens=8,
                              pad_token_id=0)[0, len(ids):].tolist()
    got = lm.generate_ids(ids, max_new_tokens=8, stop_at_eos=False)[0].token_ids
    assert got == want


def test_sampling_is_seeded_and_shares_the_prompt(onnx_export_dir):
    lm = OnnxLM(onnx_export_dir)
    params = SamplingParams(greedy=False, temperature=1.5)
    a = lm.sample("Human: hi", 4, max_new_tokens=6, params=params, seed=3)
    b = lm.sample("Human: hi", 4, max_new_tokens=6, params=params, seed=3)
    c = lm.sample("Human: hi", 4, max_new_tokens=6, params=params, seed=4)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    assert len({tuple(g.token_ids) for g in a}) > 1
    for g in a:
        assert len(g.logprobs) == len(g.token_ids) and all(lp <= 0 for lp in g.logprobs)
    # top_k=1 and a tiny top_p are greedy
    greedy = lm.generate("Human: hi", max_new_tokens=6).token_ids
    for p in (SamplingParams(greedy=False, top_k=1), SamplingParams(greedy=False, top_p=1e-6)):
        assert lm.sample("Human: hi", 2, max_new_tokens=6, params=p, seed=0)[1].token_ids == greedy


def test_best_of_n_keeps_the_top_scoring_sample(onnx_export_dir):
    lm = OnnxLM(onnx_export_dir)
    best, scores = lm.best_of_n("Human: hi", 5, score=lambda g: g.text.count("e"), max_new_tokens=8, seed=2)
    assert len(scores) == 5 and best.text.count("e") == max(scores)


def test_stops_at_eos(onnx_export_dir):
    lm = OnnxLM(onnx_export_dir)
    eos = lm.manifest.eos_token_ids[0]
    lm.forward_orig = lm.forward

    def forcing_eos(ids, past, attention_mask=None):  # make EOS the argmax after 2 steps
        logits, present = lm.forward_orig(ids, past, attention_mask)
        if present[0].shape[2] >= len(lm.encode("Human: hi")) + 2:
            logits[..., eos] = 1e4
        return logits, present

    lm.forward = forcing_eos
    g = lm.generate("Human: hi", max_new_tokens=10)
    assert g.finish_reason == "eos" and g.token_ids[-1] == eos and len(g.token_ids) == 3


def test_top_p_and_top_k_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    keep = np.isfinite(filtered_logprobs(logits, SamplingParams(greedy=False, top_p=0.7)))
    assert keep.tolist() == [[True, True, False, False]]
    keep = np.isfinite(filtered_logprobs(logits, SamplingParams(greedy=False, top_k=3)))
    assert keep.tolist() == [[True, True, True, False]]
    rng = np.random.default_rng(0)
    draws = np.concatenate([choose(np.repeat(logits, 1000, 0), SamplingParams(greedy=False), rng)[0]
                            for _ in range(10)])
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, np.exp(log_softmax(logits))[0], atol=0.02)
    with pytest.raises(ValueError):
        SamplingParams(greedy=False, temperature=0)


def test_edge_cli(onnx_export_dir):
    proc = subprocess.run([sys.executable, "-m", "mmalign.edge", "--model", str(onnx_export_dir), "--prompt",
                           "Human: hello", "--max-new-tokens", "5", "--json"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["token_ids"] == OnnxLM(onnx_export_dir).generate("Human: hello", max_new_tokens=5).token_ids
    bad = subprocess.run([sys.executable, "-m", "mmalign.edge", "--model", str(onnx_export_dir.parent / "nope"),
                          "--prompt", "x"], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
