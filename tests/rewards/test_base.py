import pytest
import torch

from mmalign.errors import DataError
from mmalign.rewards import Reward, as_reward


def length_reward(prompts, responses):
    return [len(r) for r in responses]


def test_as_reward_wraps_plain_callable():
    r = as_reward(length_reward)
    assert isinstance(r, Reward)
    out = r(["a", "b"], ["xyz", ""])
    assert out.dtype == torch.float32 and out.tolist() == [3.0, 0.0]
    assert r.deterministic
    assert as_reward(r) is r


def test_callable_with_media_gets_media():
    seen = []

    def fn(prompts, responses, media):
        seen.append(media)
        return [len(m) for m in media]

    assert as_reward(fn)(["p"], ["r"], [["a.png", "b.png"]]).tolist() == [2.0]
    assert seen == [[["a.png", "b.png"]]]


def test_non_finite_score_names_the_prompt_index():
    r = as_reward(lambda p, y: [1.0, float("nan"), 2.0])
    with pytest.raises(DataError, match="prompt index 1"):
        r(["a", "b", "c"], ["x", "y", "z"])


def test_wrong_number_of_scores_and_mismatched_batch():
    with pytest.raises(DataError, match="returned 1 scores for 2"):
        as_reward(lambda p, y: [1.0])(["a", "b"], ["x", "y"])
    with pytest.raises(DataError, match="2 prompts but 1 responses"):
        as_reward(length_reward)(["a", "b"], ["x"])


def test_fingerprint_is_stable_and_tracks_the_function():
    a, b = as_reward(length_reward), as_reward(length_reward)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != as_reward(lambda p, y: [0.0] * len(y)).fingerprint()
