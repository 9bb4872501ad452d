"""Tilt calculus against closed forms and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmalign.align import (
    beta_for_kl,
    get_procedure,
    get_transform,
    kl_divergence,
    make_grid,
    win_rate,
)
from mmalign.align.analytic import best_of_n_optimum, policy_at_kl, tilt
from mmalign.errors import UserError

BETAS = [10.0, 1.0, 0.1, 0.01, 1e-3, 1e-4]


@pytest.mark.parametrize("beta", BETAS)
def test_identity_closed_form(beta):
    # g = k e^{kc} / (e^k - 1);  W1 = 1/(1 - e^{-k}) - 1/k;  KL = k W1 - log((e^k - 1)/k)
    k = 1 / beta
    w1 = 1 / -math.expm1(-k) - 1 / k
    kl = k * w1 - (k + math.log(-math.expm1(-k)) - math.log(k))
    phi = get_transform("identity")
    assert win_rate(phi, beta) == pytest.approx(w1, abs=1e-6)
    assert kl_divergence(phi, beta) == pytest.approx(kl, abs=2e-5, rel=2e-6)


@pytest.mark.parametrize("beta", BETAS)
def test_log_closed_form_and_bon_independent_of_n(beta):
    # g = (k+1) c^k;  W1 = (k+1)/(k+2);  KL = log(k+1) - k/(k+1);  W_BoN(N) = W1 for every N
    k = 1 / beta
    w1 = (k + 1) / (k + 2)
    kl = math.log1p(k) - k / (k + 1)
    phi = get_transform("log")
    assert win_rate(phi, beta) == pytest.approx(w1, abs=1e-6)
    assert kl_divergence(phi, beta) == pytest.approx(kl, abs=2e-5, rel=2e-6)
    for n in (2, 4, 8, 32):
        assert win_rate(phi, beta, "bon", n) == pytest.approx(w1, abs=1e-6)


def test_log_density_closed_form():
    grid = make_grid()
    beta = 0.5
    pol = tilt(get_transform("log")(grid.c), beta, grid)
    k = 1 / beta
    inner = (grid.c > 1e-3)
    np.testing.assert_allclose(pol.density()[inner], (k + 1) * grid.c[inner] ** k, rtol=1e-4)


@pytest.mark.parametrize("name,params", [("identity", {}), ("log", {}), ("exp", {"t": 10.0}),
                                         ("neg_exp", {"t": 10.0}), ("power", {"k": 3.0})])
@pytest.mark.parametrize("beta", [1.0, 0.05])
def test_every_procedure_with_one_sample_is_standard(name, params, beta):
    phi = get_transform(name, **params)
    w = win_rate(phi, beta, "standard")
    assert win_rate(phi, beta, "bon", 1) == pytest.approx(w, abs=1e-12)
    assert win_rate(phi, beta, "won", 1) == pytest.approx(w, abs=1e-12)


def test_reference_policy_wins_half():
    # beta -> infinity is the reference itself: every procedure ties on average (W = 1/2)
    phi = get_transform("exp", t=5.0)
    for proc, n in [("standard", 1), ("bon", 4), ("won", 8)]:
        assert win_rate(phi, 1e9, proc, n) == pytest.approx(0.5, abs=1e-8)


def _monte_carlo(pol, procedure: str, n: int, draws: int, rng) -> tuple[float, float]:
    """Sample c ~ g by inverse CDF (piecewise-linear CDF on the grid cells), play the procedure."""
    cdf, edges = pol.cdf, pol.grid.edges
    u = rng.random((draws, n))
    j = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, len(cdf) - 2)
    frac = (u - cdf[j]) / np.maximum(cdf[j + 1] - cdf[j], 1e-300)
    x = edges[j] + np.clip(frac, 0, 1) * (edges[j + 1] - edges[j])
    y = rng.random((draws, n))  # reference: c uniform
    pick = np.max if procedure == "bon" else np.min
    wins = pick(x, axis=1) > pick(y, axis=1)  # ties have probability 0
    w = wins.mean()
    return float(w), float(math.sqrt(w * (1 - w) / draws))


@pytest.mark.parametrize("name,procedure,n,kl", [
    ("exp", "bon", 4, 0.5), ("exp", "bon", 8, 0.1), ("neg_exp", "won", 4, 0.5), ("neg_exp", "won", 2, 1.0),
])
def test_monte_carlo_agrees_within_three_standard_errors(name, procedure, n, kl):
    rng = np.random.default_rng(1234)
    phi = get_transform(name, t=8.0)
    pol = policy_at_kl(phi, kl)
    exact = pol.win_rate(get_procedure(procedure, n))
    mc, se = _monte_carlo(pol, procedure, n, 200_000, rng)
    assert abs(mc - exact) < 3 * se, (mc, exact, se)


@pytest.mark.parametrize("name,params", [("identity", {}), ("log", {}), ("exp", {"t": 500.0}),
                                         ("exp", {"t": 1e-3}), ("neg_exp", {"t": 50.0}),
                                         ("power", {"k": 20.0})])
@pytest.mark.parametrize("kl", [0.001, 0.1, 1.0, 5.0])
def test_beta_for_kl_hits_target_robustly(name, params, kl):
    phi = get_transform(name, **params)
    beta = beta_for_kl(phi, kl)
    assert math.isfinite(beta) and beta > 0
    assert kl_divergence(phi, beta) == pytest.approx(kl, rel=1e-8)
    w = win_rate(phi, beta, "bon", 4)
    assert 0.5 <= w <= 1.0


def test_kl_decreases_with_beta_and_win_rate_with_it():
    phi = get_transform("exp", t=20.0)
    betas = np.geomspace(1e-4, 1e2, 30)
    kls = [kl_divergence(phi, b) for b in betas]
    wins = [win_rate(phi, b, "bon", 4) for b in betas]
    assert all(np.isfinite(kls)) and all(np.isfinite(wins))
    assert np.all(np.diff(kls) < 0)
    assert np.all(np.diff(wins) < 0)


def test_unreachable_kl_is_a_user_error():
    flat = np.zeros(make_grid().cells)  # a constant transform cannot move away from the reference
    with pytest.raises(UserError, match="out of reach"):
        beta_for_kl(flat, 0.5)
    with pytest.raises(UserError, match="kl must be"):
        beta_for_kl(get_transform("identity"), 0.0)


def test_neg_exp_with_large_t_keeps_precision_near_one():
    # 1 - e^{-500 c} rounds to 1 for c > 0.08; the centred form still resolves the tilt
    phi = get_transform("neg_exp", t=500.0)
    beta = beta_for_kl(phi, 5.0)
    assert kl_divergence(phi, beta) == pytest.approx(5.0, rel=1e-8)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_log_at_beta_one_over_n_minus_one_is_the_best_of_n_policy(n):
    # The RL's yardstick: Φ = log c at β = 1/(N-1) tilts the reference into its own best-of-N
    # distribution, density N c^(N-1), with KL = log N - (N-1)/N and standard win rate N/(N+1).
    target = best_of_n_optimum(n)
    assert target.beta == pytest.approx(1 / (n - 1))
    assert target.kl == pytest.approx(math.log(n) - (n - 1) / n, rel=1e-12)
    assert target.win_rate == pytest.approx(n / (n + 1), rel=1e-12)
    grid = make_grid()
    phi = get_transform("log")
    t = tilt(phi(np.clip(grid.c, 1e-300, 1.0)), target.beta, grid)
    inner = (grid.c > 1e-6) & (grid.c < 1 - 1e-6)
    np.testing.assert_allclose(t.density()[inner], n * grid.c[inner] ** (n - 1), rtol=1e-3)
    assert kl_divergence(phi, target.beta) == pytest.approx(target.kl, abs=1e-5)
    assert win_rate(phi, target.beta) == pytest.approx(target.win_rate, abs=1e-6)


def test_best_of_n_optimum_for_four():
    target = best_of_n_optimum(4)
    assert round(target.kl, 3) == 0.636 and target.win_rate == 0.8
    with pytest.raises(UserError):
        best_of_n_optimum(1)


def test_raw_reward_beta_makes_an_affine_raw_reward_tilt_the_identity_tilt():
    """r = a + s·c with c ~ U[0, 1]: at beta_for_raw_reward(std of r, kl) the tilt exp(r/beta) of
    the uniform reference has KL = kl, computed here directly on a fine grid of c."""
    from mmalign.align import beta_for_raw_reward

    c = (np.arange(200_000) + 0.5) / 200_000
    for offset, scale, kl in ((3.0, 1.0, 0.25), (-7.0, 40.0, 1.0), (0.0, 0.01, 0.5)):
        r = offset + scale * c
        beta = beta_for_raw_reward(float(r.std()), kl)
        log_q = (r - r.max()) / beta
        q = np.exp(log_q) / np.exp(log_q).mean()  # tilted density over the uniform reference
        assert float(np.mean(q * np.log(q))) == pytest.approx(kl, rel=2e-3)
    for bad in (0.0, float("nan")):
        with pytest.raises(UserError, match="does not vary"):
            beta_for_raw_reward(bad, 0.5)
