"""Multimodal checkpoints go through the same entry points as text ones: zoo init and load_policy."""

from __future__ import annotations

from mmalign.models.loading import load_policy
from mmalign.models.multimodal import MultimodalPolicy
from mmalign.models.policy import Prompt


def test_zoo_init_and_load_policy_dispatch(tmp_path, run_cli):
    text = tmp_path / "corpus.txt"
    text.write_text("What colour is the shape? red green blue circle square\n" * 20)
    out = tmp_path / "mm"
    code, _, err = run_cli("zoo", "init", "multimodal/nano", "--out", str(out), "--width-scale", "0.03125",
                           "--layers", "1", "--text", str(text), "--vocab-size", "128", "--quiet")
    assert code == 0, err
    policy = load_policy(out, device="cpu", dtype="float32")
    assert isinstance(policy, MultimodalPolicy)
    samples = policy.sample([Prompt("What colour?")], n=2, max_new_tokens=3)
    assert len(samples.texts) == 2
