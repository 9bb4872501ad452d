"""Greedy-output agreement stops at EOS; strict agreement does not; divergences carry the margin."""

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


class _Bigram:
    """A model whose next-token logits depend only on the last token (a table ``[V, V]``): enough of
    the scoring interface for :func:`compare`."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def sample(self, prompts, n=1, *, max_new_tokens, greedy, ignore_eos):
        import torch

        rows = []
        for prompt in prompts:
            ids = list(prompt.token_ids)
            for _ in range(max_new_tokens):
                ids.append(int(self.table[ids[-1]].argmax()))
            rows.append(ids[len(prompt.token_ids):])
        out = torch.tensor(rows)
        return type("Samples", (), {"response_ids": out, "response_mask": torch.ones_like(out)})

    def batch_from_ids(self, prompts, prompt_ids, response_ids):
        return prompt_ids[0] + response_ids[0]

    def logits(self, ids):
        import torch

        return torch.from_numpy(self.table[ids[:-1]])[None]


def test_divergences_report_the_reference_margin_where_each_output_left_it():
    from mmalign.export.verify import compare, run_reference, top2_margin

    rng = np.random.default_rng(0)
    table = rng.normal(size=(6, 6)) * 3
    table[2, 4] = table[2].max() + 0.01  # after token 2 the reference prefers 4 by a hair
    table[2, 5] = table[2, 4] - 0.01
    ref = run_reference(_Bigram(table), [[0, 2], [1, 1]], new_tokens=4)
    assert [c[0] for c in ref.continuations] == [4, int(table[1].argmax())]

    same = compare(ref, _Bigram(table.copy()))
    assert same.divergences == 0 and np.isnan(same.divergence_margin_max) and same.greedy_agreement == 1.0

    flipped = table.copy()
    flipped[2, 5] += 0.03  # a rounding-sized change that flips the near-tie
    near = compare(ref, _Bigram(flipped))
    assert near.divergences >= 1 and near.greedy_agreement < 1.0  # every chain through token 2 leaves
    assert near.divergence_margin_max == np.float64(top2_margin(table[2])) and near.divergence_margin_max < 0.02

    broken = table.copy()
    broken[1] = broken[1][::-1].copy()  # a confident choice changed: the margin where it left is large
    far = compare(ref, _Bigram(broken))
    assert far.divergences >= 1 and far.divergence_margin_max > 0.5


def test_reference_times_the_first_prompts_alone_and_batches_the_rest():
    from mmalign.export.verify import greedy_tokens, run_reference

    model = _Bigram(np.random.default_rng(1).normal(size=(5, 5)))
    prompts = [[0], [1, 2], [3], [4, 0]]
    calls = []
    sample = model.sample
    model.sample = lambda ps, *a, **k: (calls.append(len(ps)), sample(ps, *a, **k))[1]
    ref = run_reference(model, prompts, new_tokens=3, timed=1)
    assert calls == [1, 3]  # one prompt alone (timed), then the other three in one batch
    assert ref.continuations == [greedy_tokens(_Bigram(model.table), p, 3) for p in prompts]
    assert np.isnan(run_reference(model, prompts, new_tokens=3, timed=0).tokens_per_s)  # nothing timed
