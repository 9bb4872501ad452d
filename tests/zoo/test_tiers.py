"""Model tiers: specs as data, width scaling, and the ``mmalign zoo`` verbs."""

from __future__ import annotations

import pytest
import torch

from mmalign.models.loading import load_policy
from mmalign.zoo import estimate_params, get_tier, list_tiers, scale_architecture


def test_three_text_tiers_grow():
    tiers = list_tiers("text")
    assert [t.name for t in tiers] == ["nano", "pro", "ultra"]
    sizes = [estimate_params(t.architecture) for t in tiers]
    assert 1.5e9 < sizes[0] < 2.5e9 and sizes[0] < sizes[1] < sizes[2]
    for t in tiers:
        a = t.architecture
        assert a["num_kv_heads"] < a["num_heads"] and a["num_heads"] % a["num_kv_heads"] == 0  # GQA
        assert t.checkpoints and t.precision and t.placement
    assert get_tier("nano").precision == "4bit" and get_tier("text/ultra").placement == "multi_gpu_fsdp"


def test_width_scale_keeps_gqa_and_head_dim():
    for t in list_tiers("text"):
        a = scale_architecture(t.architecture, 1 / 32, num_layers=2)
        assert a["hidden_size"] % a["num_heads"] == 0 and (a["hidden_size"] // a["num_heads"]) % 2 == 0
        assert a["num_heads"] % a["num_kv_heads"] == 0 and a["num_layers"] == 2
        assert a["num_heads"] // a["num_kv_heads"] == t.architecture["num_heads"] // t.architecture["num_kv_heads"]


def test_zoo_cli_list_show_init(run_cli, tmp_path):
    code, out, _ = run_cli("zoo", "list")
    assert code == 0 and "text/nano" in out and "Qwen/Qwen2.5-1.5B-Instruct" in out
    code, out, _ = run_cli("zoo", "show", "pro")
    assert code == 0 and "hidden_size: 4096" in out and "estimated_params" in out
    text = tmp_path / "corpus.txt"
    text.write_text("hello world\nthe cat sat on the mat\n" * 50, encoding="utf-8")
    out_dir = tmp_path / "nano"
    code, out, err = run_cli("zoo", "init", "nano", "--out", str(out_dir), "--width-scale", "0.03125",
                             "--layers", "2", "--text", str(text), "--vocab-size", "300", "-q")
    assert code == 0, err
    pol = load_policy(out_dir, device="cpu", dtype="float32")
    cfg = pol.model.config
    assert cfg.hidden_size == 64 and cfg.num_hidden_layers == 2 and cfg.num_key_value_heads < cfg.num_attention_heads
    s = pol.sample(["the cat"], 2, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pol.score(s), s.logprobs, atol=1e-4)


def test_zoo_cli_errors(run_cli, tmp_path):
    code, _, err = run_cli("zoo", "show", "nanoo")
    assert code == 2 and "did you mean 'nano'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("zoo", "init", "nano", "--out", str(tmp_path / "x"), "--text", str(tmp_path / "none.txt"))
    assert code == 2 and "--text: file not found" in err
    code, _, err = run_cli("zoo", "init", "nano", "--out", str(tmp_path / "x"), "--width-scale", "2")
    assert code == 2 and "--width-scale must be in (0, 1], got 2.0" in err


@pytest.mark.parametrize("context", ["0", "-5"])
def test_zoo_init_refuses_a_context_that_cannot_hold_a_token(run_cli, tmp_path, context):
    code, _, err = run_cli("zoo", "init", "nano", "--out", str(tmp_path / "x"), "--context", context)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--context must be >= 2" in lines[0] and context in lines[0], err
    assert not (tmp_path / "x").exists()


def test_zoo_init_refuses_a_model_this_machine_cannot_hold(run_cli, tmp_path):
    code, _, err = run_cli("zoo", "init", "nano", "--out", str(tmp_path / "x"), "--vocab-size", str(10**12))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--vocab-size" in lines[0] and "GiB" in lines[0], err
    assert not (tmp_path / "x").exists()


def test_zoo_env_override(run_cli, tmp_path, monkeypatch):
    fam = tmp_path / "zoo" / "text"
    fam.mkdir(parents=True)
    (fam / "micro.yaml").write_text(
        "name: micro\nfamily: text\narchitecture: {hidden_size: 64, intermediate_size: 128, num_layers: 1,"
        " num_heads: 4, num_kv_heads: 2}\n", encoding="utf-8")
    monkeypatch.setenv("MMALIGN_ZOO", str(tmp_path / "zoo"))
    assert [t.full_name for t in list_tiers()] == ["text/micro"]
    code, out, _ = run_cli("zoo", "list")
    assert code == 0 and "text/micro" in out and "text/nano" not in out
