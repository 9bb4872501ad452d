"""Greedy-output agreement stops at EOS; strict agreement does not."""

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
