"""Training end to end on CPU: a CTRL step on the adapter policy (default suite), and the
documented SFT-then-CTRL run on the bundled shapes task (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmalign.models.policy import Prompt
from tests.multimodal.ctrl_helpers import ctrl_step, reference_rewards

ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_step_on_image_and_audio_prompts(mm_policy, media_dir):
    ps = [Prompt("<image> Colour?", [str(media_dir / "red.png")]), Prompt("<audio> Pitch?", [str(media_dir / "tone.wav")])]
    ref = mm_policy.reference()
    reward = lambda p, r: [float(x.count("a")) - 0.1 * len(x) for x in r]  # noqa: E731
    refs = reference_rewards(ref, ps, reward, k=8, max_new_tokens=4)
    opt = torch.optim.AdamW(mm_policy.trainable_parameters(), lr=1e-3)
    proj = mm_policy.model.adapters["vision"].projector[0].weight
    before = proj.detach().clone()
    stats = ctrl_step(mm_policy, ref, ps, reward, refs, opt, n=4, max_new_tokens=4)
    assert {"pg_loss", "grad_norm", "calibrated"} <= set(stats)
    assert not torch.equal(before, proj.detach())  # the gradient reached the projector


def _shapes_reward():
    from omegaconf import OmegaConf

    from mmalign.config.loader import load_yaml_tree
    from mmalign.rewards.factory import build_reward

    tree, _ = load_yaml_tree(ROOT / "configs" / "multimodal" / "shapes_reward.yaml")
    return build_reward(OmegaConf.to_container(tree.reward))


@pytest.mark.slow
def test_sft_then_ctrl_on_bundled_shapes(tmp_path):
    from mmalign.data.loaders import load_sft
    from mmalign.models.multimodal_loading import load_multimodal_policy
    from mmalign.models.multimodal_sft import answer_accuracy, sft, to_prompt
    from mmalign.models.toy import SAMPLE_TEXT
    from mmalign.utils.seed import seed_everything
    from mmalign.zoo import init_media_checkpoint

    seed_everything(0)
    train, evals = load_sft("bundled:shapes/train"), load_sft("bundled:shapes/eval")
    texts = [f"{r.prompt} {r.response}" for r in train] * 3 + SAMPLE_TEXT
    path = init_media_checkpoint("vision/nano", tmp_path / "nano", texts=texts, vocab_size=384,
                                 width_scale=64 / 2048, num_layers=2, toy=True)
    policy = load_multimodal_policy(path, device="cpu", dtype="float32")
    reward = _shapes_reward()
    colour = [r for r in evals if r.meta["question"] == "colour"]
    shape = [r for r in evals if r.meta["question"] == "shape"]
    assert answer_accuracy(policy, evals, reward) < 0.1

    sft(policy, train, stage="projector", steps=20, lr=3e-3, batch_size=16)
    sft(policy, train, stage="full", steps=150, lr=2e-3, batch_size=16)
    acc_colour, acc_shape = answer_accuracy(policy, colour, reward), answer_accuracy(policy, shape, reward)
    print(f"SFT eval accuracy: colour {acc_colour:.3f} (chance 0.25), shape {acc_shape:.3f} (chance 0.333)")
    overall = (acc_colour + acc_shape) / 2  # chance: (0.25 + 0.333) / 2 = 0.29
    assert acc_colour >= 0.75 and overall >= 0.55

    # short CTRL run on the shape questions: the calibrated reward rises above the reference's 0.5
    prompts = [to_prompt(r) for r in train if r.meta["question"] == "shape"][:24]
    ref = policy.reference()
    refs = reference_rewards(ref, prompts, reward, k=8, max_new_tokens=6, temperature=1.0)
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=5e-4)
    history = [ctrl_step(policy, ref, prompts, reward, refs, opt, n=4, beta=0.02, max_new_tokens=6)["calibrated"]
               for _ in range(8)]
    print("CTRL calibrated reward per step:", [round(c, 3) for c in history])
    # the policy starts as the reference, whose expected calibrated reward is exactly 0.5
    assert sum(history[-4:]) / 4 > 0.52
