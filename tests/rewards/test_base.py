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


def test_a_callable_that_raises_is_a_reward_error_naming_it():
    from mmalign.errors import RewardError
    from mmalign.rewards.base import CallableReward

    def judge(prompts, responses):
        raise RuntimeError("quota exceeded\nsecond line")

    with pytest.raises(RewardError) as exc:
        CallableReward(judge, name="judge")(["p1", "p2"], ["a", "b"])
    assert exc.value.reward == "reward 'judge'" and exc.value.index is None
    assert str(exc.value) == ("reward 'judge' raised RuntimeError: quota exceeded (on a batch of 2 rows; "
                              "--debug shows the traceback)")
    assert isinstance(exc.value.__cause__, RuntimeError)


def test_a_non_finite_score_carries_its_row():
    from mmalign.errors import RewardError
    from mmalign.rewards.base import to_scores

    with pytest.raises(RewardError) as exc:
        to_scores([1.0, 2.0, float("inf")], 3, source="reward 'x'")
    assert exc.value.index == 2 and str(exc.value) == "reward 'x' returned a non-finite score (inf) for prompt index 2"
