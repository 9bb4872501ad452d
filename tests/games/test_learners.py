"""Naive / LA / LOLA / SOS updates against plain double-autograd loops and finite differences."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from mmalign.games import LearnerSpec, PolicySpec, get_game, outcome_stats, train, update, values

SEEDS = 6


def _setup(semantics: str = "fresh", learn_e: bool = True, game: str = "prisoners_dilemma", seed: int = 0):
    spec = PolicySpec(epsilon=0.2, learn_e=learn_e, semantics=semantics)
    u1, u2 = get_game(game).tensors()
    g = torch.Generator().manual_seed(seed)
    th1 = torch.randn(SEEDS, spec.n_params, generator=g, dtype=torch.float64)
    th2 = torch.randn(SEEDS, spec.n_params, generator=g, dtype=torch.float64)
    return partial(values, spec, u1, u2), th1, th2


def _reference(vfn, t1: torch.Tensor, t2: torch.Tensor, name: str, alpha: float, eta: float,
               a: float = 0.5, b: float = 0.1, taylor: bool = False, p_force: float | None = None):
    """One seed, written out with torch.autograd.grad as in the SOS notebook (losses L = -V)."""
    t1, t2 = t1.clone().requires_grad_(), t2.clone().requires_grad_()
    v1, v2 = vfn(t1, t2)
    L1, L2 = -v1, -v2

    def g(y, x):
        return torch.autograd.grad(y, x, create_graph=True)[0]

    xi1, xi2 = g(L1, t1), g(L2, t2)
    d2L1, d1L2 = g(L1, t2), g(L2, t1)
    # H_o ξ: derivative of my loss's cross-gradient along the other's own gradient
    ho1 = g((d2L1 * xi2.detach()).sum(), t1)
    ho2 = g((d1L2 * xi1.detach()).sum(), t2)
    # χ: derivative of the other's own gradient along my loss's cross-gradient
    chi1 = g((xi2 * d2L1.detach()).sum(), t1)
    chi2 = g((xi1 * d1L2.detach()).sum(), t2)
    xi, hoxi, chi = (torch.cat(pair).detach() for pair in ((xi1, xi2), (ho1, ho2), (chi1, chi2)))
    if name == "naive":
        step = xi
    elif name == "la":
        step = xi - eta * hoxi
    elif name == "lola":
        step = xi - eta * chi - (eta * hoxi if taylor else 0)
    else:
        xi0 = xi - eta * hoxi
        if p_force is not None:
            p = p_force
        else:
            dot = torch.dot(-eta * chi, xi0)
            p1 = 1.0 if dot >= 0 else min(1.0, float(-a * torch.norm(xi0) ** 2 / dot))
            p2 = float(torch.norm(xi) ** 2) if torch.norm(xi) < b else 1.0
            p = min(p1, p2)
        step = xi0 - p * eta * chi
    new = torch.cat([t1, t2]).detach() - alpha * step.detach()
    return new[: t1.numel()], new[t1.numel():]


@pytest.mark.parametrize("semantics", ["fresh", "shared"])
@pytest.mark.parametrize("name,taylor", [("naive", False), ("la", False), ("lola", False), ("lola", True), ("sos", False)])
def test_updates_match_double_autograd_loop(semantics: str, name: str, taylor: bool) -> None:
    vfn, th1, th2 = _setup(semantics, game="chicken" if semantics == "shared" else "prisoners_dilemma")
    spec = LearnerSpec(name, lr=0.7, lookahead=1.3, taylor=taylor)
    n1, n2, _ = update(vfn, th1, th2, spec)
    for s in range(SEEDS):
        r1, r2 = _reference(vfn, th1[s], th2[s], name, 0.7, 1.3, taylor=taylor)
        torch.testing.assert_close(n1[s], r1)
        torch.testing.assert_close(n2[s], r2)


def _tandem(t1: torch.Tensor, t2: torch.Tensor):
    """Letcher et al.'s tandem game, L^1 = (x+y)² − 2x, L^2 = (x+y)² − 2y, as values."""
    s = (t1 + t2).sum(-1)
    return -(s**2 - 2 * t1.sum(-1)), -(s**2 - 2 * t2.sum(-1))


def test_sos_criteria_both_branches_match_reference() -> None:
    # p1 < 1: on the tandem game just past x + y = 1 the shaping term opposes ξ_0
    th1 = torch.linspace(0.2, 1.5, 14, dtype=torch.float64)[:, None]
    th2 = torch.full_like(th1, 0.3)
    n1, n2, info = update(_tandem, th1, th2, LearnerSpec("sos", lr=0.1))
    p = info["p"]
    assert bool(((p > 0.1) & (p < 0.9)).sum() >= 3) and bool((p == 1).any())
    for s in range(len(th1)):
        r1, r2 = _reference(_tandem, th1[s], th2[s], "sos", 0.1, 0.1)
        torch.testing.assert_close(torch.cat([n1[s], n2[s]]), torch.cat([r1, r2]))
    # p2 = ‖ξ‖² < b²: near a fixed point of naive learning in the transparent PD
    vfn, th1, th2 = _setup("fresh", learn_e=False, seed=3)
    for _ in range(40):
        th1, th2, _ = update(vfn, th1, th2, LearnerSpec("naive", lr=1.0))
    n1, n2, info = update(vfn, th1, th2, LearnerSpec("sos", lr=1.0, sos_a=0.5, sos_b=0.1))
    assert bool((info["p"] < 0.01).all())
    for s in range(SEEDS):
        r1, r2 = _reference(vfn, th1[s], th2[s], "sos", 1.0, 1.0)
        torch.testing.assert_close(torch.cat([n1[s], n2[s]]), torch.cat([r1, r2]))


def test_lola_equals_foerster_formula_by_finite_differences() -> None:
    """Δθ_1 = α∇_1V^1 + αη (∇_2V^1)ᵀ ∇_1∇_2V^2, with every derivative by central differences."""
    vfn, th1, th2 = _setup("fresh", learn_e=False, seed=4)
    alpha, eta, h = 0.5, 2.0, 1e-4
    t1, t2 = th1[0], th2[0]

    def V(i, a, b):
        return float(vfn(a, b)[i])

    def grad_fd(i, a, b, wrt):
        out = torch.zeros(3, dtype=torch.float64)
        for k in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[k] = h
            if wrt == 0:
                out[k] = (V(i, a + e, b) - V(i, a - e, b)) / (2 * h)
            else:
                out[k] = (V(i, a, b + e) - V(i, a, b - e)) / (2 * h)
        return out

    g11, g21 = grad_fd(0, t1, t2, 0), grad_fd(0, t1, t2, 1)
    cross = torch.zeros(3, 3, dtype=torch.float64)  # ∂²V^2 / ∂θ_1 ∂θ_2
    for k in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[k] = 1e-3
        cross[k] = (grad_fd(1, t1 + e, t2, 1) - grad_fd(1, t1 - e, t2, 1)) / 2e-3
    expected = t1 + alpha * g11 + alpha * eta * cross @ g21
    n1, _, _ = update(vfn, th1, th2, LearnerSpec("lola", lr=alpha, lookahead=eta))
    torch.testing.assert_close(n1[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("semantics", ["fresh", "shared"])
def test_sos_with_p_one_is_taylor_lola_and_p_zero_is_lookahead(semantics: str) -> None:
    vfn, th1, th2 = _setup(semantics, seed=1)
    sos1 = update(vfn, th1, th2, LearnerSpec("sos", lr=0.3, lookahead=0.9, sos_p=1.0))
    lola = update(vfn, th1, th2, LearnerSpec("lola", lr=0.3, lookahead=0.9, taylor=True))
    sos0 = update(vfn, th1, th2, LearnerSpec("sos", lr=0.3, lookahead=0.9, sos_p=0.0))
    la = update(vfn, th1, th2, LearnerSpec("la", lr=0.3, lookahead=0.9))
    for got, want in ((sos1, lola), (sos0, la)):
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])
    assert not torch.allclose(sos1[0], sos0[0])


def test_naive_learners_defect_and_lola_shapes_towards_cooperation() -> None:
    game, spec = get_game("prisoners_dilemma"), PolicySpec(epsilon=0.05)
    naive = train(game, spec, LearnerSpec("naive"), seeds=64, steps=80, seed=0, log_every=40)
    lola = train(game, spec, LearnerSpec("lola"), seeds=64, steps=80, seed=0, log_every=40)
    s_naive = outcome_stats(naive.joint, naive.value1, naive.value2)
    s_lola = outcome_stats(lola.joint, lola.value1, lola.value2)
    assert s_naive["mean_p_dd"] > 0.8
    assert s_lola["mean_p_cc"] > s_naive["mean_p_cc"] + 0.15
    assert naive.history["step"] == [0, 40, 80] and len(naive.history["p_cc"]) == 3


def test_outcome_stats_thresholds() -> None:
    joint = torch.tensor([[0.95, 0.02, 0.02, 0.01], [0.0, 0.93, 0.0, 0.07],
                          [0.3, 0.2, 0.1, 0.4], [0.0, 0.0, 0.05, 0.95]], dtype=torch.float64)
    s = outcome_stats(joint, torch.ones(4), torch.zeros(4), threshold=0.9)
    assert (s["share_cc"], s["share_cd"], s["share_dd"], s["share_mixed"]) == (0.25, 0.25, 0.25, 0.25)
    assert s["share_asymmetric"] == 0.25 and s["argmax_dd"] == 0.5
    assert s["mean_value1"] == 1.0
