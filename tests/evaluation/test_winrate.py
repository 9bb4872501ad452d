"""Win-rate estimator: exact enumeration, unbiasedness, ties, interval coverage."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mmalign.errors import UserError
from mmalign.evaluation.stats import bootstrap_ci
from mmalign.evaluation.winrate import (
    Procedure,
    kl_estimate,
    prompt_win_rate,
    selection_weights,
    win_rate,
)


def _pick(indices, sel, name):
    """The procedure's choice among drawn indices: best/worst selection reward, first drawn wins ties."""
    best = indices[0]
    for i in indices[1:]:
        if (name == "bon" and sel[i] > sel[best]) or (name == "won" and sel[i] < sel[best]):
            best = i
    return best


@pytest.mark.parametrize("name", ["bon", "won"])
@pytest.mark.parametrize("m,n", [(5, 2), (6, 3), (4, 4)])
def test_weights_equal_subset_enumeration(name, m, n):
    rng = np.random.default_rng(m * 10 + n)
    sel = rng.integers(0, 3, size=m).astype(float)  # many ties
    counts = np.zeros(m)
    for perm in itertools.permutations(range(m), n):
        counts[_pick(list(perm), sel, name)] += 1
    expected = counts / counts.sum()
    np.testing.assert_allclose(selection_weights(sel, Procedure(name, n)), expected, atol=1e-12)


def _true_win_rate(p, q, sel, judge, proc):
    """Exact P(T(π) beats T(ref)) for discrete policies over responses, by enumerating N-tuples."""
    k = len(p)

    def output_dist(probs):
        out = np.zeros(k)
        for tup in itertools.product(range(k), repeat=proc.n):
            prob = math.prod(probs[t] for t in tup)
            if proc.name == "standard":
                out[tup[0]] += prob
                continue
            out[_pick(list(tup), sel, proc.name)] += prob
        return out

    op, oq = output_dist(p), output_dist(q)
    s = (judge[:, None] > judge[None, :]) + 0.5 * (judge[:, None] == judge[None, :])
    return float(op @ s @ oq)


@pytest.mark.parametrize("proc", [Procedure("standard"), Procedure("bon", 2), Procedure("won", 2), Procedure("bon", 3)])
def test_estimator_is_exactly_unbiased(proc):
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.3, 0.5])
    sel = np.array([1.0, 1.0, 2.0])  # responses 0 and 1 tie on selection reward
    judge = np.array([0.0, 1.0, 1.0])  # ...but not on the judge; 1 and 2 tie on the judge
    m = 3
    expected = 0.0
    for draws_p in itertools.product(range(3), repeat=m):
        pp = math.prod(p[d] for d in draws_p)
        for draws_q in itertools.product(range(3), repeat=m):
            pq = math.prod(q[d] for d in draws_q)
            est = prompt_win_rate(sel[list(draws_p)], judge[list(draws_p)], sel[list(draws_q)],
                                  judge[list(draws_q)], proc)
            expected += pp * pq * est
    assert expected == pytest.approx(_true_win_rate(p, q, sel, judge, proc), abs=1e-12)


def test_identical_samples_tie_at_one_half():
    r = np.array([0.3, 0.3, 0.9, 0.1])
    for proc in (Procedure("standard"), Procedure("bon", 2), Procedure("won", 4)):
        assert prompt_win_rate(r, r, r, r, proc) == pytest.approx(0.5)


def test_best_of_n_favours_the_better_tail():
    pol = np.array([0.0, 0.0, 0.0, 10.0])
    ref = np.array([1.0, 1.0, 1.0, 1.0])
    assert prompt_win_rate(pol, pol, ref, ref, Procedure("standard")) == pytest.approx(0.25)
    # best-of-4 of the policy always contains the 10
    assert prompt_win_rate(pol, pol, ref, ref, Procedure("bon", 4)) == pytest.approx(1.0)
    assert prompt_win_rate(pol, pol, ref, ref, Procedure("won", 2)) == pytest.approx(0.0)


def test_selection_and_judge_rewards_are_separate():
    # Selection picks sample 1 (sel 5), whose judge reward loses to the reference.
    pol_sel, pol_judge = np.array([0.0, 5.0]), np.array([9.0, 0.0])
    ref = np.array([1.0, 1.0])
    assert prompt_win_rate(pol_sel, pol_judge, ref, ref, Procedure("bon", 2)) == pytest.approx(0.0)


def test_too_few_samples_is_an_error():
    with pytest.raises(ValueError, match="at least 4"):
        selection_weights(np.zeros(3), Procedure("bon", 4))
    with pytest.raises(UserError, match="unknown procedure 'beam'"):
        Procedure("beam", 2)
    with pytest.raises(UserError, match="positive integer, got 0"):
        Procedure("bon", 0)


def test_one_procedure_type_names_itself_for_reports():
    from mmalign.align.procedures import Procedure as AlignProcedure
    from mmalign.align.procedures import get_procedure

    assert Procedure is AlignProcedure  # evaluation uses align's type, not a copy
    assert [Procedure("standard").label, Procedure("bon", 4).label, Procedure("won", 2).label] == \
        ["standard", "best-of-4", "worst-of-2"]
    assert get_procedure("standard", 8) == Procedure("standard", 1)


def test_interval_coverage_on_simulated_data():
    """Percentile-bootstrap 95% intervals cover the true best-of-2 win rate about 95% of the time."""
    rng = np.random.default_rng(0)
    proc = Procedure("bon", 2)
    # Policy rewards ~ N(0.3, 1), reference ~ N(0, 1): the true best-of-2 win rate by numerical integration.
    grid = np.linspace(-8, 8, 40001)
    from scipy.stats import norm

    def bo2_cdf(mu):
        return norm.cdf(grid - mu) ** 2

    pdf_pol = np.gradient(bo2_cdf(0.3), grid)
    truth = float(np.trapezoid(pdf_pol * bo2_cdf(0.0), grid))
    covered, reps = 0, 150
    for rep in range(reps):
        prompts = 40
        ps = [rng.normal(0.3, 1, 4) for _ in range(prompts)]
        rs = [rng.normal(0.0, 1, 4) for _ in range(prompts)]
        est = win_rate(ps, ps, rs, rs, proc, reps=400, seed=rep)
        covered += est.ci_low <= truth <= est.ci_high
    assert 0.88 <= covered / reps <= 0.99, covered / reps


def test_bootstrap_and_kl_helpers():
    lo, hi = bootstrap_ci(np.array([0.2, 0.4, 0.6, 0.8]), reps=500)
    assert 0.2 <= lo < 0.5 < hi <= 0.8
    est, se = kl_estimate([np.array([0.1, 0.3]), np.array([0.2, 0.2]), np.array([0.0, 0.4])])
    assert est == pytest.approx(0.2) and se == pytest.approx(0.0)


def test_frontier_curves_stop_at_the_calculus_limit_instead_of_failing():
    from mmalign.align.analytic import KL_MAX
    from mmalign.evaluation.plots import frontier_curves

    curves = frontier_curves("won", 4, ["identity"], 1.2 * 20.79, 3)  # a runaway policy's KL
    kls, wins = curves["identity"]
    assert max(kls) == pytest.approx(KL_MAX, rel=1e-3) and len(wins) == 3
