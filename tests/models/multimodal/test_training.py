"""Training end to end on CPU through the real recipes: one ``align`` (CTRL) step on the adapter
policy with image and audio prompts (default suite), and the documented SFT-then-CTRL run on the
bundled shapes task (slow): two ``mmalign sft`` stages, then ``mmalign align``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.models.multimodal import recipe_runs

ROOT = Path(__file__).resolve().parents[3]


def test_align_step_on_image_and_audio_prompts(mm_policy_dir, media_dir, tmp_path, run_cli):
    prompts = recipe_runs.write_prompts(tmp_path / "prompts.jsonl", [
        {"prompt": "<image> Colour?", "images": [str(media_dir / "red.png")]},
        {"prompt": "<audio> Pitch?", "audio": [str(media_dir / "tone.wav")]}])
    run = recipe_runs.align(run_cli, tmp_path, mm_policy_dir, prompts, reward=recipe_runs.python_reward("code_points"),
                            calibration={"num_samples": 16})
    (row,) = [m for m in recipe_runs.metrics(run) if "reward_calibrated" in m]
    assert row["step"] == 1 and 0 < row["reward_calibrated"] < 1 and row["grad_norm"] > 0, row
    before = load_file(str(mm_policy_dir / "media_adapters.safetensors"))
    after = load_file(str(run / "final" / "media_adapters.safetensors"))
    assert before.keys() == after.keys()

    def changed(prefix):
        keys = [k for k in before if k.startswith(prefix)]
        assert keys, prefix
        return any(not before[k].equal(after[k]) for k in keys)

    # the gradient of the one update reached both projectors (each through its own media prompt);
    # the encoders stay frozen
    assert changed("vision.projector.") and changed("audio.projector.")
    assert not changed("vision.tower.") and not changed("audio.encoder.")


def _shapes_reward():
    from omegaconf import OmegaConf

    from mmalign.config.loader import load_yaml_tree
    from mmalign.rewards.factory import build_reward

    tree, _ = load_yaml_tree(ROOT / "configs" / "multimodal" / "shapes_reward.yaml")
    return build_reward(OmegaConf.to_container(tree.reward))


@torch.no_grad()
def answer_accuracy(policy, records, reward, *, batch_size: int = 32, max_new_tokens: int = 8) -> float:
    """Mean reward of the policy's greedy answers (the 0/1 exact-match reward: accuracy)."""
    from mmalign.models.policy import to_prompt

    prompts = [to_prompt(r) for r in records]
    total = 0.0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        s = policy.sample(chunk, n=1, max_new_tokens=max_new_tokens, greedy=True)
        total += float(reward([p.text for p in chunk], s.texts, [p.media for p in chunk]).sum())
    return total / max(1, len(prompts))


def sft_stage(run_cli, tmp_path: Path, model: Path, name: str, **train) -> Path:
    """``mmalign sft`` on the bundled shapes task (held-out: the eval split) from ``model``; returns
    the run directory."""
    cfg = {"recipe": "sft",
           "run": {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 0, "device": "cpu", "dtype": "float32"},
           "model": {"path": str(model)},
           "data": {"path": "bundled:shapes/train"}, "eval_data": {"path": "bundled:shapes/eval"},
           "train": {"max_seq_len": 128, "eval_every": 0, "log_every": 10, **train}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    code, _, err = run_cli("sft", str(path), "--quiet")
    assert code == 0, err
    return tmp_path / "runs" / name


@pytest.mark.slow
def test_sft_then_ctrl_on_bundled_shapes(tmp_path, run_cli, monkeypatch):
    from mmalign.data.loaders import load_sft
    from mmalign.models.multimodal_loading import load_multimodal_policy
    from mmalign.models.toy import SAMPLE_TEXT
    from mmalign.utils.seed import seed_everything
    from mmalign.zoo import init_media_checkpoint

    seed_everything(0)
    train, evals = load_sft("bundled:shapes/train"), load_sft("bundled:shapes/eval")
    texts = [f"{r.prompt} {r.response}" for r in train] * 3 + SAMPLE_TEXT
    path = init_media_checkpoint("vision/nano", tmp_path / "nano", texts=texts, vocab_size=384,
                                 width_scale=64 / 2048, num_layers=2, toy=True)
    reward = _shapes_reward()
    colour = [r for r in evals if r.meta["question"] == "colour"]
    shape = [r for r in evals if r.meta["question"] == "shape"]
    assert answer_accuracy(load_multimodal_policy(path, device="cpu", dtype="float32"), evals, reward) < 0.1

    # LLaVA's two stages through the recipe: the projector alone, then the LM and the projector
    projector = sft_stage(run_cli, tmp_path, path, "sft-projector", trainable="projector", steps=20, lr=3e-3,
                          batch_size=16)
    full = sft_stage(run_cli, tmp_path, projector / "final", "sft-full", trainable="all", steps=150, lr=2e-3,
                     batch_size=16)
    for run in (projector, full):  # each stage lowers the held-out loss it starts from
        held = [m["eval_loss"] for m in recipe_runs.metrics(run) if "eval_loss" in m]
        assert held[-1] < held[0], (run.name, held)
    policy = load_multimodal_policy(full / "final", device="cpu", dtype="float32")
    acc_colour, acc_shape = answer_accuracy(policy, colour, reward), answer_accuracy(policy, shape, reward)
    print(f"SFT eval accuracy: colour {acc_colour:.3f} (chance 0.25), shape {acc_shape:.3f} (chance 0.333)")
    overall = (acc_colour + acc_shape) / 2  # chance: (0.25 + 0.333) / 2 = 0.29
    assert acc_colour >= 0.75 and overall >= 0.55, (acc_colour, acc_shape)

    # a short CTRL run of the align recipe on the shape questions: the calibrated reward rises
    # above the reference's 0.5
    shape_train = [r for r in train if r.meta["question"] == "shape"][:24]
    prompts = recipe_runs.write_prompts(tmp_path / "shape_prompts.jsonl",
                                        [{"prompt": r.prompt, "images": r.images} for r in shape_train])
    monkeypatch.chdir(ROOT)  # the rule reward's answers_file is relative to the repository root
    run = recipe_runs.align(run_cli, tmp_path, full / "final", prompts, include=ROOT / "configs/multimodal/shapes_reward.yaml",
                            name="align-shapes", steps=16, kl={"beta": 0.02}, train={"lr": 5e-4},
                            rollout={"prompts_per_step": 24, "max_new_tokens": 6})
    history = [m["reward_calibrated"] for m in recipe_runs.metrics(run) if "reward_calibrated" in m]
    print("CTRL calibrated reward per step:", [round(c, 3) for c in history])
    # the policy starts as the reference, whose expected calibrated reward is exactly 0.5
    early, late = sum(history[:4]) / 4, sum(history[-8:]) / 8
    assert len(history) == 16 and late > 0.54 and late > early + 0.03, history
