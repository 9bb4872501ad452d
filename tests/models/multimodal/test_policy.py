"""The vision/audio-language policy behind the Policy protocol: sampling = scoring, save/load,
reference, encoder reuse in best-of-N, and one-line errors for bad media."""

from __future__ import annotations

import pytest
import torch

from mmalign.errors import DataError
from mmalign.models.policy import Policy, Prompt, SequenceBatch, SourcedPrompt


def prompts(d):
    return [
        Prompt("<image>\nWhat colour is it?", [str(d / "red.png")]),
        Prompt("Listen: <audio> then look <image> and <image>",
               [str(d / "tone.wav"), str(d / "red.png"), str(d / "blue.jpg")]),
        Prompt("<video> What happens?", [str(d / "clip")]),
        "A plain text prompt.",
    ]


@pytest.mark.parametrize("kwargs", [{}, {"temperature": 0.7}, {"greedy": True}])
def test_sample_logprobs_equal_scored_logprobs(mm_policy, media_dir, kwargs):
    assert isinstance(mm_policy, Policy)
    g = torch.Generator().manual_seed(0)
    s = mm_policy.sample(prompts(media_dir), n=3, max_new_tokens=6, generator=g, **kwargs)
    assert s.response_ids.shape[0] == 12 and len(s.texts) == 12
    scored = mm_policy.score(s, temperature=kwargs.get("temperature", 1.0)) if not kwargs.get("greedy") \
        else mm_policy.score(s)
    assert torch.allclose(scored, s.logprobs, atol=1e-4)
    # placeholders are expanded to one id per feature vector: 4 per image, 3 frames x 4 for the video
    image_id = mm_policy.model.token_ids["image"]
    video_id = mm_policy.model.token_ids["video"]
    assert int((s.prompt_ids[0] == image_id).sum()) == 4
    assert int((s.prompt_ids[3] == image_id).sum()) == 8
    assert int((s.prompt_ids[6] == video_id).sum()) == 12
    assert not bool(torch.isin(s.response_ids, mm_policy.model._media_ids).any())


def test_media_changes_the_distribution(mm_policy, media_dir):
    red = mm_policy.encode([Prompt("<image> Answer:", [str(media_dir / "red.png")])], [" red"])
    blue = mm_policy.encode([Prompt("<image> Answer:", [str(media_dir / "blue.jpg")])], [" red"])
    assert not torch.allclose(mm_policy.score(red), mm_policy.score(blue))


def test_save_load_round_trip_after_training(mm_policy, media_dir, tmp_path):
    from mmalign.models.multimodal_loading import load_multimodal_policy

    batch = mm_policy.encode(prompts(media_dir), [" red", " high", " dark", " ok"], add_eos=True)
    opt = torch.optim.SGD(mm_policy.trainable_parameters(), lr=0.5)
    (-mm_policy.score(batch).sum()).backward()
    opt.step()
    before = mm_policy.score(batch).detach()
    mm_policy.save(tmp_path / "ckpt")
    loaded = load_multimodal_policy(tmp_path / "ckpt", device="cpu", dtype="float32")
    assert torch.allclose(loaded.score(batch), before, atol=1e-6)
    # encoders are frozen by default; projectors and the LM train
    names = {n for n, p in mm_policy.model.named_parameters() if p.requires_grad}
    assert any("projector" in n for n in names) and any(n.startswith("lm.") for n in names)
    assert not any(".tower." in n or ".encoder." in n for n in names)


def test_reference_is_a_frozen_copy(mm_policy, media_dir):
    ref = mm_policy.reference()
    batch = mm_policy.encode(prompts(media_dir)[:2], [" a", " b"])
    assert type(ref) is type(mm_policy) and ref.trainable_parameters() == []
    assert torch.allclose(ref.score(batch), mm_policy.score(batch).detach())
    with torch.no_grad():
        for p in mm_policy.model.adapters["vision"].projector.parameters():
            p.add_(1.0)
    assert not torch.allclose(ref.score(batch), mm_policy.score(batch).detach())


def test_best_of_n_encodes_each_prompt_once(mm_policy, media_dir):
    from mmalign.decoding.bon import best_of_n

    calls = {"vision": [], "audio": []}
    h1 = mm_policy.model.adapters["vision"].tower.register_forward_hook(
        lambda m, inp, out: calls["vision"].append(inp[0].shape[0]))
    h2 = mm_policy.model.adapters["audio"].encoder.register_forward_hook(
        lambda m, inp, out: calls["audio"].append(len(inp[0])))
    ps = prompts(media_dir)[:2]
    seen = []

    def reward(p, r, media):
        seen.extend(media)
        return [float(len(x)) for x in r]

    choices = best_of_n(mm_policy, ps, reward, n=8, max_new_tokens=5, generator=torch.Generator().manual_seed(1))
    h1.remove()
    h2.remove()
    assert len(choices) == 2 and all(len(c.candidates) == 8 for c in choices)
    assert calls["vision"] == [3]  # ONE tower call: 1 image of prompt 0 + 2 images of prompt 1, not 8x
    assert calls["audio"] == [1]
    assert len(seen) == 16 and seen[8] == ps[1].media  # the reward sees each row's media


def test_scoring_n_rows_encodes_each_prompt_once(mm_policy, media_dir):
    s = mm_policy.sample(prompts(media_dir)[:1], n=6, max_new_tokens=3)
    sizes = []
    h = mm_policy.model.adapters["vision"].tower.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    mm_policy.score(s)
    h.remove()
    assert sizes == [1]


def test_shared_prefix_scoring_equals_full_path(mm_policy, media_dir):
    s = mm_policy.sample(prompts(media_dir), n=3, max_new_tokens=5, generator=torch.Generator().manual_seed(1))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(2))[:9]
    batch = SequenceBatch(prompt_ids=s.prompt_ids[order], prompt_mask=s.prompt_mask[order],
                          response_ids=s.response_ids[order], response_mask=s.response_mask[order],
                          prompt_index=s.prompt_index[order], prompts=s.prompts)
    assert mm_policy._prefix_groups(batch) is not None
    params = mm_policy.trainable_parameters()
    results = []
    for shared in (False, True):
        mm_policy.model.zero_grad(set_to_none=True)
        lp = mm_policy.score(batch, temperature=0.7, shared_prefix=shared)
        lp.sum().backward()
        results.append((lp.detach(), [p.grad.clone() if p.grad is not None else None for p in params]))
    mm_policy.model.zero_grad(set_to_none=True)
    (full, g_full), (shared, g_shared) = results
    assert torch.allclose(shared, full, atol=1e-5, rtol=0)
    for a, b in zip(g_full, g_shared):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).abs().max() <= 1e-5 * a.abs().max().clamp_min(1e-12)


@pytest.mark.parametrize("prompt, message", [
    (Prompt("<image> <image> two?", ["red.png"]), "2 <image> placeholder(s) in the text but 1 image item(s)"),
    (Prompt("no placeholder", ["red.png"]), "0 <image> placeholder(s) in the text but 1 image item(s)"),
    (Prompt("<audio> where?", []), "1 <audio> placeholder(s) in the text but 0 audio item(s)"),
    (Prompt("<image> x", ["missing.png"]), "media file not found"),
    (Prompt("<image> x", ["broken.png"]), "cannot read image"),
    (Prompt("<audio> x", ["broken.wav"]), "cannot read audio"),
])
def test_bad_media_is_a_one_line_error_naming_the_record(mm_policy, media_dir, prompt, message):
    media = [str(media_dir / m) for m in prompt.media]
    bad = SourcedPrompt(text=prompt.text, media=media, source="shapes/train.jsonl:12")
    ok = Prompt("<image> fine", [str(media_dir / "red.png")])
    for call in (lambda: mm_policy.sample([ok, bad], n=2, max_new_tokens=2),
                 lambda: mm_policy.encode([ok, bad], [" a", " b"])):
        with pytest.raises(DataError) as err:
            call()
        text = str(err.value)
        assert "\n" not in text and text.startswith("shapes/train.jsonl:12: ") and message in text


def test_unnamed_prompt_errors_name_index_and_text(mm_policy, media_dir):
    with pytest.raises(DataError, match=r"prompt 1 \('<image> <image> Which'\): 2 <image>"):
        mm_policy.sample(["text", Prompt("<image> <image> Which", [str(media_dir / "red.png")])], n=1)


def test_response_with_placeholder_is_rejected(mm_policy, media_dir):
    with pytest.raises(DataError, match="response contains a media placeholder"):
        mm_policy.encode([Prompt("<image> x", [str(media_dir / "red.png")])], ["look <image>"])
