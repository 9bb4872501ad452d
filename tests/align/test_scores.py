"""The RL step's score from raw rewards: calibrate + transform (CTRL), BOND's (N-1) log c, raw."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.align import get_transform
from mmalign.align.scores import bond_log_ratio, calibrated_rewards, score
from mmalign.errors import DataError

# two prompts, K = 4 reference rewards each, n = 3 candidates per prompt (prompt-major rows)
REFS = [torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([5.0, 5.0, 6.0, 7.0], dtype=torch.float64)]
RAW = torch.tensor([-1.0, 1.0, 9.0, 5.0, 6.5, 4.0])
# c = (#{z < r} + #{z <= r}) / 2K by hand
C = [0.0, (1 + 2) / 8, 1.0, (0 + 2) / 8, (3 + 3) / 8, 0.0]


def test_calibrated_rewards_are_each_candidates_quantile_among_its_prompts_references():
    c = calibrated_rewards(REFS, RAW, 3)
    assert c.dtype == torch.float32 and c.tolist() == C


def test_ctrl_score_is_the_transform_of_c_with_log_floored_at_one_over_2k():
    for name, t in [("identity", None), ("exp", 2.0), ("neg_exp", 1.5)]:
        phi = get_transform(name, t=t)
        out = score(RAW, REFS, 3, transform=phi)
        assert out.calibrated.tolist() == C
        torch.testing.assert_close(out.scores, torch.as_tensor(phi(torch.tensor(C)), dtype=torch.float32))
    logs = score(RAW, REFS, 3, transform=get_transform("log")).scores
    expected = [math.log(max(c, 1 / 8)) for c in C]  # 1/2K with K = 4: c = 0 scores log(1/8), not -inf
    torch.testing.assert_close(logs, torch.tensor(expected), rtol=0, atol=1e-6)


def test_bond_score_is_the_best_of_n_log_ratio_less_log_n():
    n = 4
    out = score(RAW, REFS, 3, bond_n=n)
    expected = [(n - 1) * math.log(max(c, 1 / 8)) for c in C]
    torch.testing.assert_close(out.scores, torch.tensor(expected), rtol=0, atol=1e-6)
    # continuous rewards: pi_BoN / pi_ref = N c^(N-1), so the score + log N is its log
    c = torch.tensor([0.2, 0.5, 0.9])
    torch.testing.assert_close(bond_log_ratio(c, n, 1000) + math.log(n), torch.log(n * c ** (n - 1)))


def test_raw_reward_passes_through_and_calibration_needs_equal_k():
    out = score(RAW, None, 3)
    assert out.scores is RAW and out.calibrated is None
    with_refs = score(RAW, REFS, 3)  # no transform: raw scores, c kept for reporting
    assert with_refs.scores is RAW and with_refs.calibrated.tolist() == C
    with pytest.raises(ValueError, match="reference rewards"):
        score(RAW, None, 3, transform=get_transform("identity"))
    with pytest.raises(DataError, match=r"same number K .*\[3, 4\]"):
        score(RAW, [REFS[0][:3], REFS[1]], 3, bond_n=2)
