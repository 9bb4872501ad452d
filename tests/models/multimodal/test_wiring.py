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


def test_load_policy_dispatches_through_the_kind_registry(mm_policy_dir, tiny_llava_dir, tiny_llama_dir, monkeypatch):
    """Each checkpoint's recorded kind picks its loader from POLICY_LOADERS (a new adapter family
    registers there); what the loader gets is the resolved ``model:`` section."""
    from mmalign.models import loading

    assert loading.policy_kind(str(mm_policy_dir)) == "multimodal"
    assert loading.policy_kind(str(tiny_llava_dir)) == "native_vlm"
    assert loading.policy_kind(str(tiny_llama_dir)) == "text"
    assert loading.policy_kind("some-org/some-model") == "text"  # a hub id: no local record
    calls = []
    for kind in ("text", "multimodal", "native_vlm"):
        monkeypatch.setitem(loading.POLICY_LOADERS, kind,
                            lambda cfg, kind=kind, **kw: calls.append((kind, cfg.path, kw["key"])) or kind)
    assert load_policy(mm_policy_dir, key="reference") == "multimodal"
    assert load_policy(tiny_llava_dir) == "native_vlm"
    assert load_policy(tiny_llama_dir, key="teacher") == "text"
    assert calls == [("multimodal", str(mm_policy_dir), "reference"), ("native_vlm", str(tiny_llava_dir), "model"),
                     ("text", str(tiny_llama_dir), "teacher")]
