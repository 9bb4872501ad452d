"""Multimodal through the real CLI with the shipped configs: ``zoo init`` → ``sft`` (projector
stage) → ``sft`` (full stage) → ``align`` (CTRL) → ``decode`` (best-of-N) → ``evaluate winrate``
on the bundled shapes task, and a LoRA stage on the bundled tones task. The recipes are the text
recipes; only the checkpoint is multimodal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign.cli.main import main
from mmalign.data.loaders import load_sft
from mmalign.models.adapters import AudioAdapter, VisionAdapter
from mmalign.models.toy import SAMPLE_TEXT

ROOT = Path(__file__).resolve().parents[3]
CFG = ROOT / "configs" / "multimodal"


@pytest.fixture(scope="module")
def nano_dir(tmp_path_factory) -> Path:
    """``mmalign zoo init multimodal/nano`` at toy width, tokenizer trained on the tasks' text."""
    tmp = tmp_path_factory.mktemp("mm_cli")
    records = load_sft("bundled:shapes/train") + load_sft("bundled:tones/train")
    text = tmp / "corpus.txt"
    lines = [f"{r.prompt} {r.response}".replace("\n", " ") for r in records] * 2 + list(SAMPLE_TEXT)
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp / "nano"
    code = main(["zoo", "init", "multimodal/nano", "--out", str(out), "--width-scale", "0.03125", "--layers", "1",
                 "--text", str(text), "--vocab-size", "384", "--quiet"])
    assert code == 0
    return out


def _weights(directory: Path) -> tuple[dict, dict]:
    """(LM tensors, media adapter tensors) of a saved full-weight checkpoint."""
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors")), load_file(str(directory / "media_adapters.safetensors"))


def _same(a: dict, b: dict, prefix: str = "") -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys and set(keys) == {k for k in b if k.startswith(prefix)}
    return all(a[k].equal(b[k]) for k in keys)


def _ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err
    return out


def test_shapes_pipeline_through_the_cli(nano_dir, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)  # the rule reward's answers_file is relative to the repository root
    runs = tmp_path / "runs"
    common = [f"run.output_dir={runs}", "run.device=cpu", "--quiet"]

    # stage 1: only the projector trains
    _ok(run_cli("sft", str(CFG / "sft_shapes_projector.yaml"), f"model.path={nano_dir}", "train.steps=3",
                "train.batch_size=8", "eval_data.max_rows=8", *common))
    stage1 = runs / "sft-shapes-projector" / "final"
    lm0, media0 = _weights(nano_dir)
    lm1, media1 = _weights(stage1)
    assert _same(lm0, lm1)  # the LM is frozen
    assert _same(media0, media1, "vision.tower.") and _same(media0, media1, "audio.encoder.")
    assert not _same(media0, media1, "vision.projector.")  # image prompts train the vision projector
    assert _same(media0, media1, "audio.projector.")  # no audio in the shapes task: no gradient

    # stage 2: LM + projectors
    _ok(run_cli("sft", str(CFG / "sft_shapes_full.yaml"), f"model.path={stage1}", "train.steps=3",
                "train.batch_size=8", "eval_data.max_rows=8", *common))
    stage2 = runs / "sft-shapes-full" / "final"
    lm2, media2 = _weights(stage2)
    assert not _same(lm1, lm2) and not _same(media1, media2, "vision.projector.")
    assert _same(media1, media2, "vision.tower.")  # encoders stay frozen
    metrics = [json.loads(line) for line in (runs / "sft-shapes-full" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 0 and "eval_loss" in metrics[0] and metrics[-1]["step"] == 3

    # CTRL with the rule reward
    out = _ok(run_cli("align", str(CFG / "align_shapes.yaml"), f"model.path={stage2}", "train.steps=2",
                      "data.max_rows=8", "calibration.num_samples=4", "rollout.prompts_per_step=4", *common))
    assert "align-shapes: 2 steps" in out
    aligned = runs / "align-shapes" / "final"
    assert json.loads((aligned / "mmalign_policy.json").read_text())["kind"] == "multimodal"
    steps = [json.loads(line) for line in (runs / "align-shapes" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if "reward_calibrated" in m] == [1, 2]

    # best-of-N: each prompt's image is encoded once for its N samples
    encoded: list[int] = []
    original = VisionAdapter.encode

    def counting_encode(self, items):
        encoded.append(len(items))
        return original(self, items)

    monkeypatch.setattr(VisionAdapter, "encode", counting_encode)
    _ok(run_cli("decode", str(CFG / "decode_shapes_bon.yaml"), f"model.path={aligned}", "data.max_rows=6",
                "decode.n=4", *common))
    assert encoded == [6]  # one batched call, one image per prompt (not 6 x 4)
    rows = [json.loads(line) for line in (runs / "decode-shapes-bon" / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["prompt"].startswith("<image>")
    for row in rows:
        assert len(row["candidates"]) == 4 and row["reward"] == max(row["rewards"])
        assert row["response"] == row["candidates"][row["index"]]
    monkeypatch.setattr(VisionAdapter, "encode", original)

    # inference-time win rate of the CTRL policy against the SFT reference
    _ok(run_cli("evaluate", "winrate", str(CFG / "winrate_shapes.yaml"), f"policy.path={aligned}",
                f"reference.path={stage2}", "prompts.max_rows=6", "samples_per_prompt=4", "bootstrap_reps=100",
                *common))
    results = json.loads((runs / "winrate-shapes" / "results.json").read_text())
    assert results["num_prompts"] == 6 and [w["label"] for w in results["win_rates"]] == ["standard", "best-of-4"]
    # the judge (exact match) is 0/1, so a standard comparison wins 1/2 + (j_policy - j_ref)/2 on
    # average: the standard win rate is fixed by the two mean rewards the run reports
    standard = results["win_rates"][0]
    gap = results["policy_judge_reward_mean"] - results["reference_judge_reward_mean"]
    assert standard["win_rate"] == pytest.approx(0.5 + gap / 2), (standard, gap)
    assert (runs / "winrate-shapes" / "report.md").is_file()


def test_tones_lora_stage_then_best_of_n(nano_dir, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    common = [f"run.output_dir={runs}", "run.device=cpu", "--quiet"]
    _ok(run_cli("sft", str(CFG / "sft_tones_full.yaml"), f"model.path={nano_dir}", "model.lora.enabled=true",
                "train.steps=2", "train.batch_size=8", "eval_data.max_rows=4", *common))
    final = runs / "sft-tones-full" / "final"
    meta = json.loads((final / "mmalign_policy.json").read_text())
    assert meta["adapter"] and (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    from safetensors.torch import load_file

    before = load_file(str(nano_dir / "media_adapters.safetensors"))
    after = load_file(str(final / "media_adapters.safetensors"))
    assert not _same(before, after, "audio.projector.") and _same(before, after, "audio.encoder.")

    encoded: list[int] = []
    original = AudioAdapter.encode

    def counting_encode(self, items):
        encoded.append(len(items))
        return original(self, items)

    monkeypatch.setattr(AudioAdapter, "encode", counting_encode)
    _ok(run_cli("decode", str(CFG / "decode_tones_bon.yaml"), f"model.path={final}", "data.max_rows=3",
                "decode.n=4", *common))
    assert encoded == [3]
    rows = [json.loads(line) for line in (runs / "decode-tones-bon" / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["candidates"]) == 4 for r in rows)


def test_projector_stage_on_a_text_model_is_a_config_error(tiny_llama_dir, tmp_path, run_cli):
    code, _, err = run_cli("sft", str(CFG / "sft_shapes_projector.yaml"), f"model.path={tiny_llama_dir}",
                           f"run.output_dir={tmp_path}", "run.device=cpu", "--quiet")
    assert code == 2
    assert err.strip().count("\n") == 0 and "train.trainable: 'projector' needs a multimodal checkpoint" in err


def test_packing_prompts_with_media_is_a_config_error(nano_dir, tmp_path, run_cli):
    code, _, err = run_cli("sft", str(CFG / "sft_shapes_full.yaml"), f"model.path={nano_dir}", "train.packing=true",
                           f"run.output_dir={tmp_path}", "--quiet")
    assert code == 2 and "train.packing: prompts with images/audio/video cannot be packed" in err
    assert not (tmp_path / "sft-shapes-full").exists()  # refused before a run directory is made
