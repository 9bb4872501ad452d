"""``mmalign reward``: Bradley-Terry training end to end through the real CLI."""

import json
from pathlib import Path

import pytest
import torch

from mmalign.data import load_preferences
from mmalign.rewards import build_reward
from mmalign.training import checkpoint as ckpt
from tests.training.helpers import assert_same_weights, corrupt, kill_after_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/reward/bt_bundled.yaml"


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_run_learns_and_loads_back_as_hf_classifier(run_cli, tmp_path):
    code, out, err = run_cli(
        "-q", "reward", str(CONFIG), f"run.output_dir={tmp_path}", "run.name=bt",
        "data.train.max_rows=960", "data.eval.max_rows=240", "model.toy.hidden_size=32", "model.toy.vocab_size=400",
        "train.max_steps=30", "train.eval_every=15", "train.save_every=15", "train.log_every=5")
    assert code == 0, err
    run_dir = tmp_path / "bt"
    for name in ("config.yaml", "metrics.jsonl", "run.log", "DONE", "final/model.safetensors", "final/tokenizer.json",
                 "final/mmalign_reward.json"):
        assert (run_dir / name).exists(), name
    assert [s for s, _ in ckpt.list_checkpoints(run_dir / "checkpoints")] == [15, 30]
    assert ckpt.verify(run_dir / "checkpoints" / "step-00000030") is None
    rows = metrics(run_dir)
    final = rows[-1]
    assert final["final"] is True and final["step"] == 30
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert final["eval_accuracy"] > 0.6  # chance is 0.5
    assert str(run_dir / "final") in out

    reward = build_reward({"kind": "hf_classifier", "path": str(run_dir / "final"), "device": "cpu", "batch_size": 7})
    assert reward.format == "concat"
    pairs = load_preferences("bundled:text/prefs_eval")[:240]
    rc = reward([p.prompt for p in pairs], [p.chosen for p in pairs])
    rr = reward([p.prompt for p in pairs], [p.rejected for p in pairs])
    accuracy = ((rc > rr).float() + 0.5 * (rc == rr).float()).mean().item()
    assert accuracy == pytest.approx(final["eval_accuracy"], abs=1e-6)


def test_starts_from_a_causal_lm_checkpoint(run_cli, tmp_path, tiny_llama_dir):
    code, out, err = run_cli(
        "-q", "reward", str(CONFIG), f"run.output_dir={tmp_path}", "run.name=from_lm", f"model.path={tiny_llama_dir}",
        "data.train.max_rows=64", "data.eval.max_rows=16", "train.max_steps=2", "train.batch_size=8")
    assert code == 0, err
    meta = json.loads((tmp_path / "from_lm/final/mmalign_reward.json").read_text())
    assert meta["format"] == "chat"  # the tiny Llama's tokenizer has a chat template
    reward = build_reward({"kind": "hf_classifier", "path": str(tmp_path / "from_lm/final"), "device": "cpu"})
    assert reward([ "Human: Count from 1 to 3.\n\nAssistant:"], [" 1 2 3"]).shape == (1,)


@pytest.mark.slow
def test_full_bundled_run_reaches_85_percent_in_under_5_minutes(run_cli, tmp_path):
    code, out, err = run_cli("-q", "reward", str(CONFIG), f"run.output_dir={tmp_path}", "train.max_minutes=null")
    assert code == 0, err
    final = metrics(tmp_path / "reward_bundled")[-1]
    assert final["eval_accuracy"] >= 0.85
    assert final["seconds"] < 300


def _one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmalign: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_errors_are_one_line_with_exit_2(run_cli, tmp_path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("recipe: rewards\nrun: {name: x}\n")
    line = _one_line_error(*run_cli("reward", str(cfg))[::2])
    assert "r.yaml: this is a 'rewards' config, but the command expects a 'reward' config" in line

    cfg.write_text("recipe: reward\nmodel:\n  format: chatml\n")
    line = _one_line_error(*run_cli("reward", str(cfg))[::2])
    assert "r.yaml:3" in line and "model.format: must be one of auto, chat, concat; got 'chatml'" in line

    cfg.write_text(f"recipe: reward\nrun: {{output_dir: {tmp_path / 'runs'}}}\ndata:\n  train: {{path: {tmp_path / 'missing.jsonl'}}}\n")
    line = _one_line_error(*run_cli("reward", str(cfg))[::2])
    assert "missing.jsonl: data file not found" in line

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": \n')
    cfg.write_text(f"recipe: reward\nrun: {{output_dir: {tmp_path / 'runs'}}}\ndata:\n  train: {{path: {bad}}}\n")
    line = _one_line_error(*run_cli("reward", str(cfg))[::2])
    assert "bad.jsonl:2: malformed JSON line" in line
    assert not (tmp_path / "runs").exists()  # nothing is written before the data is known to be good


SMALL = ("data.train.max_rows=96", "data.eval.max_rows=32", "model.toy.hidden_size=16", "model.toy.vocab_size=300",
         "train.batch_size=8", "train.eval_every=100", "train.max_length=64", "train.warmup_steps=2")


def test_resume_after_sigkill_matches_uninterrupted_run(run_cli, tmp_path):
    args = ["reward", str(CONFIG), "run.name=r", *SMALL, "train.save_every=4", "train.max_steps=16"]
    kill_after_checkpoint([*args, f"run.output_dir={tmp_path / 'k'}", "-q"], tmp_path / "k" / "r" / "checkpoints", 8)
    code, _, err = run_cli("-q", *args, f"run.output_dir={tmp_path / 'k'}", "--resume")
    assert code == 0, err
    code, _, err = run_cli("-q", *args, f"run.output_dir={tmp_path / 's'}")
    assert code == 0, err
    runs = [tmp_path / d / "r" for d in ("k", "s")]
    assert_same_weights(*(r / "final" / "model.safetensors" for r in runs))
    assert [{k: v for k, v in m.items() if k not in ("time", "seconds")} for m in metrics(runs[0])] == \
        [{k: v for k, v in m.items() if k not in ("time", "seconds")} for m in metrics(runs[1])]
    assert sum(1 for r in metrics(runs[0]) if r.get("final")) == 1


def test_resume_from_a_corrupt_newest_checkpoint_falls_back_and_ends_the_same(run_cli, tmp_path):
    args = ("reward", str(CONFIG), f"run.output_dir={tmp_path}", "run.name=r", *SMALL, "train.save_every=4",
            "train.max_steps=10")
    assert run_cli("-q", *args)[0] == 0
    run_dir = tmp_path / "r"
    (tmp_path / "straight.safetensors").write_bytes((run_dir / "final" / "model.safetensors").read_bytes())
    (run_dir / "DONE").unlink()  # as if it had stopped after its step-8 checkpoint, which then rotted
    corrupt(run_dir / "checkpoints" / "step-00000008" / "optimizer.pt")
    code, out, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert "warning: checkpoint step-00000008 is corrupt or partial (optimizer.pt does not match its sha256" in out
    assert "resuming after step 4" in (run_dir / "run.log").read_text()
    assert_same_weights(run_dir / "final" / "model.safetensors", tmp_path / "straight.safetensors")


def test_unknown_reward_kind_in_a_recipe_config_is_one_line(run_cli, tiny_llama_dir):
    code, _, err = run_cli("config", "check", str(ROOT / "configs/align/toy_bundled.yaml"), f"model.path={tiny_llama_dir}",
                           "reward.kind=hf_clasifier")
    line = _one_line_error(code, err)
    assert "reward.kind: must be one of hf_classifier, python, rules" in line and "did you mean 'hf_classifier'" in line


def test_divergence_stops_with_one_line_and_no_done(run_cli, tmp_path):
    args = ("-q", "reward", str(CONFIG), f"run.output_dir={tmp_path}", "run.name=nan", "data.train.max_rows=96",
            "data.eval.max_rows=32", "model.toy.hidden_size=16", "model.toy.vocab_size=300", "train.batch_size=8",
            "train.eval_every=100", "train.save_every=1", "train.max_steps=8", "train.max_length=64", "train.lr=1e9",
            "train.warmup_steps=0")
    line = _one_line_error(*run_cli(*args)[::2])
    assert "reward: training diverged at step " in line and "lower train.lr (now 1e+09)" in line
    step = int(line.split("at step ")[1].split(":")[0])
    run_dir = tmp_path / "nan"
    assert not (run_dir / "DONE").exists() and not (run_dir / "final").exists()
    found = ckpt.latest_valid(run_dir / "checkpoints")
    assert found.step == step - 1  # the last step that trained without a NaN
    assert all(torch.isfinite(t).all() for t in found.tensors().values())
