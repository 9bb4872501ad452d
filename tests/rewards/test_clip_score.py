import json

import pytest
import torch

from mmalign.errors import ConfigError, DataError
from mmalign.rewards import build_reward

TINY_CLIP = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_clip")
    (d / "open_clip_config.json").write_text(json.dumps(TINY_CLIP))
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        p = d / f"{i}.png"
        Image.new("RGB", (40, 40), colour).save(p)
        paths.append(str(p))
    return paths


def test_clip_score_is_scaled_cosine_similarity(clip_dir, images):
    from PIL import Image

    torch.manual_seed(0)
    reward = build_reward({"kind": "clip_score", "model": f"local-dir:{clip_dir}", "pretrained": None,
                           "scale": 2.5, "device": "cpu"})
    responses = ["a red square", "a blue square"]
    media = [[images[0]], [Image.open(images[1]), images[0]]]
    got = reward(["describe", "describe"], responses, media)
    m = reward.model
    with torch.no_grad():
        t = torch.nn.functional.normalize(m.encode_text(reward.tokenize(responses)), dim=-1)
        ims = [reward.preprocess(Image.open(p).convert("RGB")) for p in images]
        v = torch.nn.functional.normalize(m.encode_image(torch.stack(ims)), dim=-1)
    expected = torch.stack([2.5 * (v[0] @ t[0]), 2.5 * ((v[1] @ t[1]) + (v[0] @ t[1])) / 2])
    assert torch.allclose(got, expected, atol=1e-5)
    assert reward.deterministic and isinstance(reward.fingerprint(), str)


def test_clip_score_media_errors(clip_dir, images):
    reward = build_reward({"kind": "clip_score", "model": f"local-dir:{clip_dir}", "device": "cpu"})
    with pytest.raises(DataError, match="needs media"):
        reward(["p"], ["r"])
    with pytest.raises(DataError, match="prompt index 1 has no image"):
        reward(["p", "q"], ["r", "s"], [[images[0]], []])
    with pytest.raises(DataError, match="image file not found for prompt index 0: nowhere.png"):
        reward(["p"], ["r"], [["nowhere.png"]])


def test_unknown_clip_model_is_a_config_error():
    with pytest.raises(ConfigError, match="reward.model: cannot create open_clip model 'No-Such-CLIP'"):
        build_reward({"kind": "clip_score", "model": "No-Such-CLIP"})
