"""``mmalign evaluate mmlu`` end to end: JSON output, the run directory, configs, alignment-tax reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign.evaluation.mmlu.data import sample_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "eval"


@pytest.fixture(scope="module")
def other_llama_dir(tmp_path_factory):
    from mmalign.models.toy import SAMPLE_TEXT, build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("other"), SAMPLE_TEXT * 20, vocab_size=384, seed=7)


def test_json_output_and_out_dir(run_cli, tiny_llama_dir, tmp_path):
    code, out, err = run_cli("evaluate", "mmlu", "--model", str(tiny_llama_dir), "--data", str(sample_dir()),
                             "--shots", "1", "--limit", "4", "--json", "--out", str(tmp_path / "o"))
    assert code == 0, err
    res = json.loads(out)
    assert set(res["subjects"]) == {"astronomy", "elementary_mathematics", "high_school_geography", "nutrition", "philosophy"}
    assert res["overall"]["n"] == 20
    assert set(res["categories"]) == {"stem", "social_sciences", "humanities", "other"}
    # micro average equals the question-weighted mean of the subjects
    assert res["overall"]["acc"] == pytest.approx(sum(s["acc"] * s["n"] for s in res["subjects"].values()) / 20)
    assert res["categories"]["stem"]["n"] == 8
    files = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"results.json", "report.md", "predictions.jsonl"} <= files
    preds = [json.loads(line) for line in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 20 and all(len(p["lls"]) == 4 for p in preds)
    assert sum(p["correct"] for p in preds) / 20 == pytest.approx(res["overall"]["acc"])


def test_config_file_with_flags(run_cli, tiny_llama_dir):
    code, out, err = run_cli("evaluate", "mmlu", str(CONFIGS / "mmlu_5shot.yaml"), "shots=0", "--model", str(tiny_llama_dir),
                             "--data", str(sample_dir()), "--subjects", "philosophy", "--limit", "3", "-q")
    assert code == 0, err
    assert "| philosophy | 3 |" in out and "0-shot" in out
    code, out, err = run_cli("config", "check", str(CONFIGS / "mmlu_ur_cot.yaml"), f"model={tiny_llama_dir}")
    assert code == 0, err
    code, _, err = run_cli("evaluate", "mmlu", "--data", str(sample_dir()), "-q")
    assert code == 2 and "model: required" in err


def test_alignment_tax_report(run_cli, tiny_llama_dir, other_llama_dir, tmp_path):
    args = ("evaluate", "mmlu", "--model", str(tiny_llama_dir), "--data", str(sample_dir()), "--shots", "0",
            "--limit", "4", "-q")
    code, out, err = run_cli(*args, "--compare", str(tiny_llama_dir), "--json")
    assert code == 0, err
    same = json.loads(out)["compare"]["overall"]
    assert same["diff"] == 0 and same["boot_low"] == 0 and same["boot_high"] == 0
    code, out, err = run_cli(*args, "--compare", str(other_llama_dir), "--out", str(tmp_path / "tax"))
    assert code == 0, err
    cmp = json.loads((tmp_path / "tax" / "compare.json").read_text())
    res = json.loads((tmp_path / "tax" / "results.json").read_text())
    preds = [json.loads(x) for x in (tmp_path / "tax" / "predictions.jsonl").read_text().splitlines()]
    before = [p["correct"] for p in preds if p["model"] == str(tiny_llama_dir)]
    after = [p["correct"] for p in preds if p["model"] == str(other_llama_dir)]
    assert len(before) == len(after) == 20
    o = cmp["overall"]
    assert o["before"] == pytest.approx(res["overall"]["acc"])
    assert o["diff"] == pytest.approx((sum(after) - sum(before)) / 20)
    assert o["normal_low"] <= o["diff"] <= o["normal_high"] and o["boot_low"] <= o["diff"] <= o["boot_high"]
    assert set(cmp["subjects"]) == set(res["subjects"])
    assert "Alignment tax" in (tmp_path / "tax" / "compare.md").read_text()
    assert "Alignment tax" in out


def test_lora_aligned_checkpoint_is_scored_as_its_merged_model(run_cli, tiny_llama_dir, tmp_path):
    """`--model <final/>` of a LoRA run (adapter + base reference, no config.json) scores like the
    merged model saved as a plain checkpoint."""
    import torch

    from mmalign.models.loading import load_policy

    policy = load_policy(tiny_llama_dir, device="cpu", dtype="float32", lora={"enabled": True, "r": 4})
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter changes the model
    adapter = tmp_path / "adapter"
    policy.save(adapter)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    merged = tmp_path / "merged"
    policy.model.merge_and_unload().save_pretrained(merged)
    policy.tokenizer.save_pretrained(merged)

    lls = {}
    for name, path in (("adapter", adapter), ("merged", merged), ("base", tiny_llama_dir)):
        code, out, err = run_cli("evaluate", "mmlu", "--model", str(path), "--data", str(sample_dir()),
                                 "--shots", "0", "--limit", "2", "--out", str(tmp_path / f"o-{name}"), "-q")
        assert code == 0, err
        lines = (tmp_path / f"o-{name}" / "predictions.jsonl").read_text().splitlines()
        lls[name] = [ll for line in lines for ll in json.loads(line)["lls"]]
    assert lls["adapter"] == pytest.approx(lls["merged"], abs=1e-4)
    assert lls["adapter"] != pytest.approx(lls["base"], abs=1e-2)  # the adapter was applied
