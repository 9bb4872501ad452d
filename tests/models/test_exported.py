"""Exported models behind the scoring interface (models/exported.py): the factory opens an ONNX /
GGUF export by what the path holds; its encode / score / logits / sample agree with the TextPolicy
of the checkpoint it came from; what an export cannot do is a one-line error."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.errors import UserError
from mmalign.models.exported import ExportedPolicy, export_directory, open_exported
from mmalign.models.loading import load_policy, policy_kind
from mmalign.models.policy import ScoringPolicy, TokenPrompt

PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "The quick brown"]
RESPONSES = [" Paris is the capital.", " fox jumps"]


@pytest.fixture(scope="module")
def source(tiny_llama_dir):
    return load_policy(tiny_llama_dir, device="cpu", dtype="float32").freeze()


@pytest.fixture(scope="module")
def onnx_dir(tiny_llama_dir, tmp_path_factory):
    from mmalign.export.api import export_checkpoint

    out = tmp_path_factory.mktemp("exported") / "onnx"
    export_checkpoint(tiny_llama_dir, "onnx", "fp32", out, verify=False)
    return out


@pytest.fixture(scope="module")
def gguf_dir(tiny_llama_dir, tmp_path_factory):
    from mmalign.export.api import export_checkpoint

    out = tmp_path_factory.mktemp("exported") / "gguf"
    export_checkpoint(tiny_llama_dir, "gguf", "f16", out, verify=False)
    return out


def test_the_factory_opens_exports_by_what_the_path_holds(onnx_dir, gguf_dir, tiny_llama_dir, tmp_path):
    assert policy_kind(str(onnx_dir)) == policy_kind(str(onnx_dir / "model.onnx")) == "exported"
    assert policy_kind(str(gguf_dir)) == "exported" and policy_kind(str(tiny_llama_dir)) == "text"
    onnx = load_policy(onnx_dir / "model.onnx")
    assert isinstance(onnx, ExportedPolicy) and isinstance(onnx, ScoringPolicy) and onnx.runtime_name == "onnxruntime"
    # a bitsandbytes export is an ordinary checkpoint directory: not an 'exported' kind
    bnb = tmp_path / "bnb"
    bnb.mkdir()
    (bnb / "mmalign_export.json").write_text(json.dumps({"format": "bnb"}))
    assert export_directory(bnb) is None


@pytest.mark.parametrize("runtime", ["onnxruntime", "numpy-gguf"])
def test_scores_and_logits_agree_with_the_source_policy(source, onnx_dir, gguf_dir, runtime):
    exported = open_exported(onnx_dir if runtime == "onnxruntime" else gguf_dir, runtime=runtime)
    tol = 1e-4 if runtime == "onnxruntime" else 2e-2  # fp32 graph / f16 weights
    batch = exported.encode(PROMPTS, RESPONSES)  # same tokenizer, same chat template: same tokens
    ref_batch = source.encode(PROMPTS, RESPONSES)
    assert torch.equal(batch.response_ids, ref_batch.response_ids) and torch.equal(batch.prompt_mask, ref_batch.prompt_mask)
    with torch.no_grad():
        want_lp, want_logits = source.score(ref_batch), source.logits(ref_batch)
    got_lp, got_logits = exported.score(batch), exported.logits(batch)
    mask = batch.response_mask.bool()
    assert torch.allclose(got_lp, want_lp, atol=tol) and (got_lp[~mask] == 0).all()
    assert torch.allclose(got_logits[mask].float(), want_logits[mask], atol=tol * 10)
    assert torch.allclose(exported.score(batch, temperature=0.7), source.score(ref_batch, temperature=0.7), atol=tol)


def test_prefix_shared_continuations_equal_the_plain_ones(onnx_dir, source):
    exported = load_policy(onnx_dir)
    head = source.tokenize("The following are multiple choice questions about astronomy.\n\n")
    contexts = [head + source.tokenize(q) for q in ("What is a star?\nAnswer:", "Name a planet.\nAnswer:")]
    conts = [source.tokenize(" A", add_special_tokens=False), source.tokenize(" Mars", add_special_tokens=False)]
    fast = exported.score_continuations(contexts, conts)
    plain = exported.score_continuations(contexts, conts, shared_prefix=False)
    want = source.score_continuations(contexts, conts, shared_prefix=False)
    assert fast.stats["prefix_tokens"] >= len(head) and plain.stats["prefix_tokens"] == 0
    assert fast.logprobs == pytest.approx(plain.logprobs, abs=1e-4)
    assert fast.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_greedy_sampling_matches_the_source_and_sampled_logprobs_are_the_scores(onnx_dir, source):
    exported = load_policy(onnx_dir)
    ids = source.tokenize(PROMPTS[0])
    kwargs = {"max_new_tokens": 12, "greedy": True, "ignore_eos": True}
    got = exported.sample([TokenPrompt(token_ids=ids)], **kwargs)
    want = source.sample([TokenPrompt(token_ids=ids)], **kwargs)
    assert got.response_ids.tolist() == want.response_ids.tolist() and got.finish_reasons == ["length"]
    assert got.texts == want.texts
    # sampling: reproducible from a torch generator, and each token's log-prob is its score at T
    draw = [exported.sample(PROMPTS, n=3, max_new_tokens=6, temperature=0.8,
                            generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(draw[0].response_ids, draw[1].response_ids)
    assert draw[0].response_ids.shape[0] == 6 and draw[0].prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    scored = exported.score(draw[0], temperature=0.8)
    assert torch.allclose(draw[0].logprobs, scored, atol=1e-4)


def test_kept_distributions_are_the_exports_next_token_distributions(onnx_dir):
    exported = load_policy(onnx_dir)
    s = exported.sample(PROMPTS, n=2, max_new_tokens=6, temperature=0.8, stop=["e"], keep_distributions=True,
                        generator=torch.Generator().manual_seed(2))
    alive = s.response_mask.bool()
    assert s.distributions.shape == (*s.response_ids.shape, exported.vocab_size) and not alive.all()
    forward = (exported.logits(s).float() / 0.8).log_softmax(-1)
    assert torch.allclose(s.distributions[alive], forward[alive], atol=1e-4)
    assert (s.distributions[~alive] == 0).all()
    picked = s.distributions.gather(-1, s.response_ids[..., None]).squeeze(-1) * alive
    assert torch.allclose(picked, s.logprobs, atol=1e-5)


def test_a_prompts_rows_decode_together_and_leave_the_batch_when_they_end(onnx_dir, gguf_dir, source):
    exported = load_policy(onnx_dir)
    assert exported.runtime.batched
    s = exported.sample([PROMPTS[1]], n=6, max_new_tokens=8, temperature=1.0, stop=["e"], keep_distributions=True,
                        generator=torch.Generator().manual_seed(3))
    lengths = s.response_mask.sum(dim=1).tolist()
    assert min(lengths) < max(lengths)  # a row left the batch early; the rest went on without it
    alive = s.response_mask.bool()
    forward = exported.logits(s).float().log_softmax(-1)
    assert torch.allclose(s.distributions[alive], forward[alive], atol=1e-4)
    assert torch.allclose(s.logprobs, exported.score(s), atol=1e-4)
    # greedy rows decoded together equal one row at a time on the same graph, and the source's
    ids = [TokenPrompt(token_ids=source.tokenize(PROMPTS[0]))]
    greedy = {"max_new_tokens": 10, "greedy": True, "ignore_eos": True}
    together = exported.sample(ids, n=3, **greedy).response_ids.tolist()
    single = load_policy(onnx_dir)
    single.runtime.batched = False
    assert together == single.sample(ids, n=3, **greedy).response_ids.tolist()
    assert together == source.sample(ids, n=3, **greedy).response_ids.tolist()
    # a one-sequence runtime still gives n rows per prompt, each token's log-prob its score
    gguf = open_exported(gguf_dir, runtime="numpy-gguf")
    g = gguf.sample(PROMPTS, n=2, max_new_tokens=4, temperature=0.9, generator=torch.Generator().manual_seed(1))
    assert g.prompt_index.tolist() == [0, 0, 1, 1]
    assert torch.allclose(g.logprobs, gguf.score(g, temperature=0.9), atol=1e-4)


def test_what_an_export_cannot_do_is_one_line(onnx_dir, tmp_path):
    exported = load_policy(onnx_dir)
    assert exported.reference() is exported and exported.trainable_parameters() == []
    for call in (lambda: exported.set_trainable("all"), lambda: exported.save(tmp_path / "x"),
                 lambda: exported.train(), lambda: exported.prepare(None)):
        with pytest.raises(UserError, match="can score and sample but not") as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="takes no LoRA"):
        load_policy(onnx_dir, lora={"enabled": True})
    with pytest.raises(UserError, match="runs in onnxruntime"):
        open_exported(onnx_dir, runtime="llama.cpp")
    with pytest.raises(UserError, match="prompt 0 has"):
        exported.sample(["word " * 600], max_new_tokens=4)


@pytest.mark.llamacpp
def test_llama_cpp_agrees_with_the_numpy_runner(gguf_dir, source):
    pytest.importorskip("llama_cpp")
    llama = open_exported(gguf_dir, runtime="llama.cpp")
    numpy = open_exported(gguf_dir, runtime="numpy-gguf")
    batch = llama.encode(PROMPTS, RESPONSES)
    assert torch.allclose(llama.score(batch), numpy.score(batch), atol=2e-2)
    head = source.tokenize("The following are multiple choice questions about astronomy.\n\n")
    contexts = [head + source.tokenize(q) for q in ("What is a star?\nAnswer:", "Name a planet.\nAnswer:")]
    conts = [source.tokenize(" A", add_special_tokens=False)] * 2
    fast, plain = llama.score_continuations(contexts, conts), llama.score_continuations(contexts, conts, shared_prefix=False)
    assert fast.stats["prefix_tokens"] > 0 and fast.logprobs == pytest.approx(plain.logprobs, abs=2e-2)
    greedy = {"max_new_tokens": 8, "greedy": True, "ignore_eos": True}
    ids = [TokenPrompt(token_ids=source.tokenize(PROMPTS[1]))]
    assert llama.sample(ids, **greedy).response_ids.tolist() == numpy.sample(ids, **greedy).response_ids.tolist()
