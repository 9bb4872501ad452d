"""A native Hugging Face VLM (tiny LLaVA built locally) behind the same Policy protocol."""

from __future__ import annotations

import torch

from mmalign.models.policy import Prompt


def _policy(path, **kw):
    from mmalign.models.multimodal_loading import load_multimodal_policy

    return load_multimodal_policy(path, device="cpu", dtype="float32", **kw)


def test_checkpoint_kind_and_sampling_equals_scoring(tiny_llava_dir, media_dir):
    from mmalign.models.multimodal_loading import checkpoint_kind

    assert checkpoint_kind(tiny_llava_dir) == "native_vlm"
    policy = _policy(tiny_llava_dir)
    ps = [Prompt("<image> What colour?", [str(media_dir / "red.png")]), "Plain text."]
    s = policy.sample(ps, n=3, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(policy.score(s), s.logprobs, atol=1e-4)


def test_matches_the_models_own_image_merge(tiny_llava_dir, media_dir):
    """Our placeholder expansion + feature scatter give the same log-probs as the HF processor + model."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    policy = _policy(tiny_llava_dir, chat_template="off")
    prompt, response = "<image> What colour is it?", " red"
    ours = policy.score(policy.encode([Prompt(prompt, [str(media_dir / "red.png")])], [response]))[0]

    processor = AutoProcessor.from_pretrained(tiny_llava_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    inputs = processor(images=Image.open(media_dir / "red.png"), text=prompt, return_tensors="pt")
    resp = torch.tensor([processor.tokenizer(response, add_special_tokens=False)["input_ids"]])
    ids = torch.cat([inputs["input_ids"], resp], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits[0, -resp.shape[1] - 1:-1]
    logits[:, model.config.image_token_id] = float("-inf")  # placeholders are never generated (our only change)
    theirs = logits.log_softmax(-1).gather(-1, resp[0, :, None]).squeeze(-1)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_save_load_round_trip(tiny_llava_dir, media_dir, tmp_path):
    policy = _policy(tiny_llava_dir)
    batch = policy.encode([Prompt("<image> Say:", [str(media_dir / "blue.jpg")])], [" blue"])
    with torch.no_grad():
        for p in policy.model.lm.model.multi_modal_projector.parameters():
            p.mul_(1.5)
    before = policy.score(batch).detach()
    policy.save(tmp_path / "saved")
    assert torch.allclose(_policy(tmp_path / "saved").score(batch), before, atol=1e-6)


def test_best_of_n_encodes_each_image_once(tiny_llava_dir, media_dir):
    from mmalign.decoding.bon import best_of_n

    policy = _policy(tiny_llava_dir)
    tower = policy.model.lm.model.vision_tower
    sizes = []
    h = tower.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    ps = [Prompt("<image> Colour?", [str(media_dir / "red.png")]), Prompt("<image> Colour?", [str(media_dir / "blue.jpg")])]
    choices = best_of_n(policy, ps, lambda p, r: [float(len(x)) for x in r], n=6, max_new_tokens=4)
    h.remove()
    assert sizes == [2] and [len(c.candidates) for c in choices] == [6, 6]
    assert all(c.reward == max(c.rewards) for c in choices)


def test_align_recipe_trains_a_native_vlm(tiny_llava_dir, media_dir, tmp_path, run_cli):
    """One CTRL step of the real ``align`` recipe: the saved policy is still a native VLM and scores
    an image prompt differently from the one it started from."""
    from mmalign.models.multimodal_loading import checkpoint_kind
    from tests.models.multimodal import recipe_runs

    prompts = recipe_runs.write_prompts(tmp_path / "prompts.jsonl", [
        {"prompt": "<image> Colour?", "images": [str(media_dir / "red.png")]},
        {"prompt": "<image> Colour?", "images": [str(media_dir / "blue.jpg")]}])
    run = recipe_runs.align(run_cli, tmp_path, tiny_llava_dir, prompts, reward=recipe_runs.python_reward("code_points"),
                            calibration={"num_samples": 16})
    (row,) = [m for m in recipe_runs.metrics(run) if "reward_calibrated" in m]
    assert 0 < row["reward_calibrated"] < 1 and row["grad_norm"] > 0, row
    assert checkpoint_kind(run / "final") == "native_vlm"
    batch_prompt = [Prompt("<image> Colour?", [str(media_dir / "red.png")])]
    before, after = _policy(tiny_llava_dir), _policy(run / "final")
    with torch.no_grad():
        lp_before = before.score(before.encode(batch_prompt, [" red"]))
        lp_after = after.score(after.encode(batch_prompt, [" red"]))
    assert not torch.allclose(lp_before, lp_after, atol=1e-6)


def test_trainable_scopes_keep_the_vision_tower_frozen(tiny_llava_dir):
    """``set_trainable`` on a native VLM, whose tower lives inside the LM module: ``projector`` trains
    only the multi-modal projector, ``all`` the language model and projector, never the tower."""
    policy = _policy(tiny_llava_dir)
    inner = policy.model.lm

    def trainable(module):
        return {n for n, p in module.named_parameters() if p.requires_grad}

    policy.set_trainable("projector")
    assert {id(p) for p in policy.trainable_parameters()} == {id(p) for p in inner.model.multi_modal_projector.parameters()}
    policy.set_trainable("all")
    assert not trainable(inner.model.vision_tower)
    assert trainable(inner.model.language_model) == {n for n, _ in inner.model.language_model.named_parameters()}
    assert trainable(inner.model.multi_modal_projector)
