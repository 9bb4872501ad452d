"""``mmalign sft`` end to end on the bundled text task with a toy Nano."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.data import bundled_path
from mmalign.models.loading import load_policy
from mmalign.training import checkpoint as ckpt
from mmalign.zoo import get_tier, init_text_checkpoint
from tests.training.helpers import assert_same_weights, corrupt, kill_after_checkpoint


def task_texts() -> list[str]:
    rows = [json.loads(line) for line in bundled_path("text/sft_train").read_text(encoding="utf-8").splitlines()]
    return [r["prompt"] + r["response"] for r in rows]


@pytest.fixture(scope="module")
def toy_nano(tmp_path_factory):
    out = tmp_path_factory.mktemp("nano")
    return init_text_checkpoint(get_tier("nano"), out, task_texts(), vocab_size=512, width_scale=1 / 32, num_layers=2,
                                context_length=256)


def write_config(path, model_dir, tmp_path, extra: str = "") -> str:
    path.write_text(f"""recipe: sft
run: {{name: sft-test, output_dir: {tmp_path / 'runs'}, device: cpu, dtype: float32}}
model: {{path: {model_dir}, chat_template: "off"}}
data: {{path: "bundled:text/sft_train", max_rows: 400}}
eval_data: {{path: "bundled:text/sft_eval", max_rows: 16}}
train: {{steps: 12, batch_size: 8, lr: 5.0e-3, max_seq_len: 128, eval_every: 0, log_every: 4, save_every: 6}}
{extra}""", encoding="utf-8")
    return str(path)


def test_sft_lowers_heldout_loss(run_cli, toy_nano, tmp_path):
    cfg = write_config(tmp_path / "sft.yaml", toy_nano, tmp_path)
    code, out, err = run_cli("sft", cfg, "-q")
    assert code == 0, err
    run = tmp_path / "runs" / "sft-test"
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    assert metrics[0]["step"] == 0 and len(evals) == 2
    assert evals[-1] < evals[0] - 1.0, evals
    for name in ("config.yaml", "run.log", "DONE", "final/model.safetensors"):
        assert (run / name).exists(), name
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [6]  # none at the end: final/ is
    assert ckpt.verify(run / "checkpoints" / "step-00000006") is None
    # the checkpoint loads through the ordinary loader and samples
    pol = load_policy(run / "final", device="cpu", dtype="float32", chat_template="off")
    s = pol.sample(["Human: Count from 5 to 8.\n\nAssistant:"], 2, max_new_tokens=6)
    assert torch.allclose(pol.score(s), s.logprobs, atol=1e-4)
    # a finished run is not overwritten silently
    code, _, err = run_cli("sft", cfg, "-q")
    assert code == 2 and "finished run exists" in err


def test_sft_lora_with_packing_writes_adapter(run_cli, toy_nano, tmp_path):
    cfg = write_config(tmp_path / "sft.yaml", toy_nano, tmp_path)
    code, out, err = run_cli("sft", cfg, "model.lora.enabled=true", "train.packing=true", "train.steps=4",
                             "train.save_every=0", "train.lr=1e-2", "-q")
    assert code == 0, err
    final = tmp_path / "runs" / "sft-test" / "final"
    assert (final / "adapter_model.safetensors").is_file() and not (final / "model.safetensors").exists()
    assert load_policy(final, device="cpu", dtype="float32").is_peft


def test_sft_missing_checkpoint_is_one_line_error(run_cli, tmp_path):
    cfg = write_config(tmp_path / "sft.yaml", tmp_path / "no" / "such" / "ckpt", tmp_path)
    code, out, err = run_cli("sft", cfg)
    assert code == 2 and "checkpoint directory not found" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sft_resume_after_sigkill_matches_uninterrupted_run(run_cli, toy_nano, tmp_path):
    """Kill a run right after its step-6 checkpoint, resume it, and end with an uninterrupted run's weights."""
    killed = write_config(tmp_path / "killed.yaml", toy_nano, tmp_path / "k")
    kill_after_checkpoint(["sft", killed, "-q"], tmp_path / "k" / "runs" / "sft-test" / "checkpoints", 6)
    code, _, err = run_cli("sft", killed, "--resume", "-q")
    assert code == 0, err
    straight = write_config(tmp_path / "straight.yaml", toy_nano, tmp_path / "s")
    code, _, err = run_cli("sft", straight, "-q")
    assert code == 0, err
    runs = [tmp_path / d / "runs" / "sft-test" for d in ("k", "s")]
    assert_same_weights(*(r / "final" / "model.safetensors" for r in runs))
    rows = [[{k: v for k, v in json.loads(x).items() if k != "time"} for x in (r / "metrics.jsonl").read_text().splitlines()]
            for r in runs]
    assert rows[0] == rows[1]  # the lines past the checkpoint were replaced by the same ones


def test_sft_lora_resume_from_a_corrupt_newest_checkpoint_falls_back_and_ends_the_same(run_cli, toy_nano, tmp_path):
    cfg = write_config(tmp_path / "sft.yaml", toy_nano, tmp_path, "")
    args = ("model.lora.enabled=true", "train.steps=9", "train.save_every=3", "train.lr=1e-2", "-q")
    assert run_cli("sft", cfg, *args)[0] == 0
    run = tmp_path / "runs" / "sft-test"
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [3, 6]
    straight = (run / "final" / "adapter_model.safetensors").read_bytes()
    (tmp_path / "straight.safetensors").write_bytes(straight)
    (run / "DONE").unlink()  # as if killed after its last checkpoint, whose weights then rotted on disk
    corrupt(run / "checkpoints" / "step-00000006" / "trainable.safetensors")
    code, out, err = run_cli("sft", cfg, *args[:-1], "--resume")
    assert code == 0, err
    assert "warning: checkpoint step-00000006 is corrupt or partial" in out
    assert "resuming after step 3" in (run / "run.log").read_text()
    assert_same_weights(run / "final" / "adapter_model.safetensors", tmp_path / "straight.safetensors")


def test_sft_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(run_cli, toy_nano, tmp_path):
    cfg = write_config(tmp_path / "sft.yaml", toy_nano, tmp_path)
    code, out, err = run_cli("sft", cfg, "train.lr=1e9", "train.save_every=1", "train.max_grad_norm=0", "-q")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "sft: training diverged at step " in lines[0] and "lower train.lr (now 1e+09)" in lines[0]
    step = int(lines[0].split("at step ")[1].split(":")[0])
    assert 1 < step < 12
    run = tmp_path / "runs" / "sft-test"
    assert not (run / "DONE").exists() and not (run / "final").exists()
    found = ckpt.latest_valid(run / "checkpoints")
    assert found is not None and found.step == step - 1
    assert all(torch.isfinite(w).all() for w in found.tensors().values())


class _Planted:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("manifest", ["left", "rewritten"])
def test_resume_never_unpickles_code_from_a_planted_optimizer_state(run_cli, toy_nano, tmp_path, monkeypatch,
                                                                     manifest):
    """A planted optimizer.pt fails its manifest (the checkpoint is skipped, the run starts over);
    with the manifest rewritten to match, the weights-only load refuses it in one line."""
    cfg = write_config(tmp_path / "sft.yaml", toy_nano, tmp_path)
    args = ("-q", "train.steps=2", "train.save_every=1", "data.max_rows=16")
    assert run_cli("sft", cfg, *args)[0] == 0
    run = tmp_path / "runs" / "sft-test"
    (run / "DONE").unlink()  # as if it had been killed after its checkpoint at step 1
    planted = run / "checkpoints" / "step-00000001" / "optimizer.pt"
    marker = tmp_path / "code-ran"
    torch.save({"state": _Planted(str(marker))}, planted)
    if manifest == "rewritten":
        data = json.loads((planted.parent / ckpt.MANIFEST).read_text())
        data["files"]["optimizer.pt"] = {"sha256": ckpt._sha256(planted), "size": planted.stat().st_size}
        (planted.parent / ckpt.MANIFEST).write_text(json.dumps(data))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # an environment that forces unsafe loads
    code, _, err = run_cli("sft", cfg, *args, "--resume")
    assert not marker.exists()
    if manifest == "left":
        assert code == 0, err
        log = (run / "run.log").read_text()
        assert "checkpoint step-00000001 is corrupt or partial (optimizer.pt " in log
        assert "resuming after step 0" in log and (run / "DONE").exists()
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"{planted}: cannot load the checkpoint's optimizer state" in lines[0], err


def test_an_absurd_learning_rate_is_a_config_error_before_training(run_cli, toy_nano, tmp_path):
    cfg = write_config(tmp_path / "sft.yaml", toy_nano, tmp_path)
    code, out, err = run_cli("sft", cfg, "train.lr=1e38", "-q")  # AdamW would overflow float32
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "train.lr" in lines[0], err
    assert not (tmp_path / "runs" / "sft-test").exists()
