"""``mmalign distill``: a toy Pro teacher into a toy Nano student sharing one tokenizer."""

from __future__ import annotations

import json

import pytest

from mmalign.training import checkpoint as ckpt
from mmalign.zoo import get_tier, init_text_checkpoint
from tests.recipes.test_sft import task_texts
from tests.training.helpers import assert_same_weights, kill_after_checkpoint


def sharpen(model_dir, factor: float = 30.0) -> None:
    """Make the random teacher opinionated (peaked next-token distributions) so there is a lot to learn."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(factor)
    model.save_pretrained(model_dir)


@pytest.fixture(scope="module")
def toy_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    pro = init_text_checkpoint(get_tier("pro"), root / "pro", task_texts(), vocab_size=512, width_scale=1 / 32,
                               num_layers=2, context_length=256, seed=1)
    sharpen(pro)
    nano = init_text_checkpoint(get_tier("nano"), root / "nano", width_scale=1 / 32, num_layers=1,
                                context_length=256, tokenizer_dir=pro, seed=2)
    other = init_text_checkpoint(get_tier("nano"), root / "other", ["completely different words"] * 50,
                                 vocab_size=300, width_scale=1 / 32, num_layers=1)
    return pro, nano, other


def write_config(path, student, teacher, tmp_path) -> str:
    path.write_text(f"""recipe: distill
run: {{name: kd, output_dir: {tmp_path / 'runs'}, device: cpu, dtype: float32}}
model: {{path: {student}, chat_template: "off"}}
teacher: {{path: {teacher}, chat_template: "off"}}
data: {{path: "bundled:text/sft_train", max_rows: 200}}
eval_data: {{path: "bundled:text/sft_eval", max_rows: 16}}
train: {{steps: 10, batch_size: 8, lr: 5.0e-3, max_seq_len: 128, eval_every: 0, log_every: 5}}
""", encoding="utf-8")
    return str(path)


def test_distill_lowers_student_kl_to_teacher(run_cli, toy_pair, tmp_path):
    pro, nano, _ = toy_pair
    code, out, err = run_cli("distill", write_config(tmp_path / "kd.yaml", nano, pro, tmp_path), "-q")
    assert code == 0, err
    run = tmp_path / "runs" / "kd"
    kls = [m["eval_kl"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval_kl" in m]
    assert len(kls) == 2 and kls[-1] < 0.85 * kls[0], kls
    print("held-out KL", kls)
    assert (run / "final" / "model.safetensors").is_file() and (run / "DONE").is_file()


def test_distill_from_teacher_samples(run_cli, toy_pair, tmp_path):
    pro, nano, _ = toy_pair
    cfg = write_config(tmp_path / "kd.yaml", nano, pro, tmp_path)
    code, out, err = run_cli("distill", cfg, "train.source=teacher", "train.hard_weight=0.2", "train.steps=3", "train.max_new_tokens=8",
                             "data.path=bundled:text/prompts_train", "eval_data.path=bundled:text/prompts_eval",
                             "eval_data.max_rows=8", "-q")
    assert code == 0, err
    assert "held-out KL" in out


def test_distill_needs_same_tokenizer(run_cli, toy_pair, tmp_path):
    pro, _, other = toy_pair
    code, _, err = run_cli("distill", write_config(tmp_path / "kd.yaml", other, pro, tmp_path))
    assert code == 2 and "same tokenizer" in err and len(err.strip().splitlines()) == 1


def test_distill_divergence_stops_with_one_line_and_no_done(run_cli, toy_pair, tmp_path):
    pro, nano, _ = toy_pair
    cfg = write_config(tmp_path / "kd.yaml", nano, pro, tmp_path)
    code, _, err = run_cli("distill", cfg, "train.lr=1e9", "train.save_every=1", "-q")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "distill: training diverged at step " in lines[0] and "lower train.lr (now 1e+09)" in lines[0]
    step = int(lines[0].split("at step ")[1].split(":")[0])
    run = tmp_path / "runs" / "kd"
    assert not (run / "DONE").exists() and not (run / "final").exists()
    saved = [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")]
    assert saved == list(range(max(1, step - ckpt.DEFAULT_KEEP), step))  # the newest good ones, rotated
    assert all(ckpt.verify(p) is None for _, p in ckpt.list_checkpoints(run / "checkpoints"))


TEACHER_SAMPLES = ("train.source=teacher", "train.hard_weight=0.2", "train.max_new_tokens=8",
                   "data.path=bundled:text/prompts_train", "eval_data.path=bundled:text/prompts_eval",
                   "eval_data.max_rows=8", "train.steps=8", "train.save_every=2", "train.batch_size=4")


def test_distill_from_teacher_samples_resumes_after_sigkill_bit_for_bit(run_cli, toy_pair, tmp_path):
    """The teacher samples each step's responses: the sampling generator is checkpointed too."""
    pro, nano, _ = toy_pair
    killed = write_config(tmp_path / "killed.yaml", nano, pro, tmp_path / "k")
    kill_after_checkpoint(["distill", killed, *TEACHER_SAMPLES, "-q"], tmp_path / "k" / "runs" / "kd" / "checkpoints", 4)
    code, _, err = run_cli("distill", killed, *TEACHER_SAMPLES, "--resume", "-q")
    assert code == 0, err
    straight = write_config(tmp_path / "straight.yaml", nano, pro, tmp_path / "s")
    code, _, err = run_cli("distill", straight, *TEACHER_SAMPLES, "-q")
    assert code == 0, err
    runs = [tmp_path / d / "runs" / "kd" for d in ("k", "s")]
    assert_same_weights(*(r / "final" / "model.safetensors" for r in runs))
    rows = [[{k: v for k, v in json.loads(x).items() if k != "time"} for x in (r / "metrics.jsonl").read_text().splitlines()]
            for r in runs]
    assert rows[0] == rows[1]


def test_distill_resume_from_a_corrupt_newest_checkpoint_falls_back(run_cli, toy_pair, tmp_path):
    pro, nano, _ = toy_pair
    cfg = write_config(tmp_path / "kd.yaml", nano, pro, tmp_path)
    args = ("train.steps=7", "train.save_every=3")
    assert run_cli("distill", cfg, *args, "-q")[0] == 0
    run = tmp_path / "runs" / "kd"
    (tmp_path / "straight.safetensors").write_bytes((run / "final" / "model.safetensors").read_bytes())
    (run / "DONE").unlink()
    (run / "checkpoints" / "step-00000006" / ckpt.MANIFEST).unlink()  # as if killed while writing it
    code, out, err = run_cli("distill", cfg, *args, "--resume")
    assert code == 0, err
    assert "warning: checkpoint step-00000006 is corrupt or partial (no manifest" in out
    assert "resuming after step 3" in (run / "run.log").read_text()
    assert_same_weights(run / "final" / "model.safetensors", tmp_path / "straight.safetensors")
    assert ckpt.verify(run / "checkpoints" / "step-00000006") is None  # written again, complete
