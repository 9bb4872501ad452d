"""Greedy-output agreement stops at EOS; strict agreement does not."""

import numpy as np

from mmalign.export.verify import output_agreement, until_eos


def test_outputs_stop_at_eos():
    assert until_eos([5, 6, 2, 9, 9], eos_ids=[2]) == [5, 6, 2]
    assert until_eos([5, 6, 7], eos_ids=[2]) == [5, 6, 7]
    assert until_eos([5, 6, 7], eos_ids=[]) == [5, 6, 7]


def test_agreement_counts_missing_tokens_as_mismatches():
    # Same output up to EOS: full agreement, whatever came after EOS.
    assert output_agreement(until_eos([5, 6, 2, 9], [2]), until_eos([5, 6, 2, 4], [2])) == (3, 3)
    # The exported model stops late: its extra tokens are mismatches.
    assert output_agreement([5, 6, 2], [5, 6, 7, 8, 2]) == (2, 5)
    # A divergence in the middle.
    assert output_agreement([5, 6, 7, 2], [5, 3, 7, 2]) == (3, 4)


def test_next_token_kl_matches_the_closed_form():
    from mmalign.export.verify import next_token_kl

    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.5, 0.25, 0.25])
    want = float((p * np.log(p / q)).sum())
    # logits are defined up to a constant per row
    got = next_token_kl(np.log(p)[None] + 3.0, np.log(q)[None] - 1.0)
    np.testing.assert_allclose(got, [want], rtol=1e-12)
    same = np.random.default_rng(0).normal(size=(4, 50)) * 10
    np.testing.assert_allclose(next_token_kl(same, same + 2.0), np.zeros(4), atol=1e-12)
