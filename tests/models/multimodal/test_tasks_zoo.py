"""Bundled multimodal tasks (deterministic, small, loadable, checkable) and the tiers as data."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = ROOT / "mmalign" / "data" / "bundled"


def test_generator_is_deterministic_and_small(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_multimodal_tasks.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for task in ("shapes", "tones"):
        ours = sorted(p.relative_to(tmp_path / task) for p in (tmp_path / task).rglob("*") if p.is_file())
        theirs = sorted(p.relative_to(BUNDLED / task) for p in (BUNDLED / task).rglob("*") if p.is_file())
        assert ours == theirs
        assert all(filecmp.cmp(tmp_path / task / p, BUNDLED / task / p, shallow=False) for p in ours)
    size = sum(p.stat().st_size for t in ("shapes", "tones") for p in (BUNDLED / t).rglob("*") if p.is_file())
    assert size < 2_000_000


def test_records_load_with_media_and_rules_reward_checks_answers():
    from omegaconf import OmegaConf

    from mmalign.config.loader import load_yaml_tree
    from mmalign.data.loaders import load_sft
    from mmalign.models.media import load_audio, load_image
    from mmalign.rewards.factory import build_reward

    for task, loader in (("shapes", load_image), ("tones", load_audio)):
        records = load_sft(f"bundled:{task}/eval")
        assert records and all(len(r.media) == 1 and Path(r.media[0]).is_file() for r in records)
        loader(records[0].media[0])
        tree, _ = load_yaml_tree(ROOT / "configs" / "multimodal" / f"{task}_reward.yaml")
        reward = build_reward(OmegaConf.to_container(tree.reward))
        prompts = [r.prompt for r in records]
        gold = reward(prompts, [r.response.upper() + " !" for r in records], [r.media for r in records])
        wrong = reward(prompts, ["purple" for _ in records], [r.media for r in records])
        assert gold.tolist() == [1.0] * len(records) and wrong.sum() == 0


def test_missing_media_in_a_dataset_names_the_line(tmp_path):
    from mmalign.data.loaders import load_prompts
    from mmalign.errors import DataError

    (tmp_path / "d.jsonl").write_text('{"prompt": "<image> hi", "images": ["nope.png"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d.jsonl:1: images file not found: nope.png"):
        load_prompts(str(tmp_path / "d.jsonl"))


def test_tiers_are_data_and_name_real_checkpoints():
    from mmalign.zoo import audio_spec, list_tiers, media_parts, vision_spec

    tiers = {t.full_name: t for t in list_tiers() if t.family in ("vision", "audio", "multimodal")}
    assert set(tiers) == {f"{f}/{n}" for f in ("vision", "audio", "multimodal") for n in ("nano", "pro", "ultra")}
    assert vision_spec(tiers["vision/pro"])["model"] == "ViT-B-32"
    assert tiers["vision/pro"].architecture["pretrained"] == "laion2b_s34b_b79k"
    assert audio_spec(tiers["audio/ultra"])["encoder"]["width"] == 1280
    text, parts = media_parts(tiers["multimodal/ultra"])
    assert text.full_name == "text/ultra" and set(parts) == {"vision", "audio"}


@pytest.mark.parametrize("tier", ["multimodal/nano", "vision/pro", "audio/ultra"])
def test_zoo_init_builds_tiers_at_toy_width(tier, tmp_path, media_dir):
    import torch

    from mmalign.models.multimodal_loading import load_multimodal_policy
    from mmalign.models.policy import Prompt
    from mmalign.zoo import init_media_checkpoint

    out = init_media_checkpoint(tier, tmp_path / "ckpt", vocab_size=300, width_scale=0.01, num_layers=1)
    policy = load_multimodal_policy(out, device="cpu", dtype="float32")
    assert sum(p.numel() for p in policy.model.parameters()) < 3_000_000
    media = str(media_dir / ("tone.wav" if tier.startswith("audio") else "red.png"))
    placeholder = "<audio>" if tier.startswith("audio") else "<image>"
    s = policy.sample([Prompt(f"{placeholder} hi", [media])], n=2, max_new_tokens=3)
    assert torch.allclose(policy.score(s), s.logprobs, atol=1e-4)
