"""Closed-form joint outcomes of transparent policies against agents that really simulate each other."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.config.schemas.games import GAME_NAMES, LEARNER_NAMES
from mmalign.games import GAMES, LEARNERS, PolicySpec, get_game, joint_outcome, values
from mmalign.games.policies import cooperation_probs, unpack
from mmalign.games.simulate import Agent, sample_joint

N_MC = 30_000


def _agents(spec: PolicySpec, th1: torch.Tensor, th2: torch.Tensor) -> tuple[Agent, Agent]:
    return tuple(Agent(*(float(v) for v in unpack(spec, th))) for th in (th1, th2))  # type: ignore[return-value]


def _assert_within_3se(pi: torch.Tensor, emp: dict[str, float], n: int) -> None:
    for k, (name, freq) in enumerate(emp.items()):
        p = float(pi[k])
        se = math.sqrt(max(p * (1 - p), 1e-4) / n)
        assert abs(freq - p) < 3 * se, f"{name}: closed form {p:.4f}, simulated {freq:.4f} (se {se:.4f})"


@pytest.mark.parametrize("semantics", ["fresh", "shared"])
@pytest.mark.parametrize("epsilon,learn_e,seed", [(0.1, False, 0), (0.3, True, 1), (0.05, True, 2)])
def test_closed_form_matches_monte_carlo(semantics: str, epsilon: float, learn_e: bool, seed: int) -> None:
    spec = PolicySpec(epsilon=epsilon, learn_e=learn_e, semantics=semantics)
    g = torch.Generator().manual_seed(seed)
    th1, th2 = torch.randn(2, spec.n_params, generator=g, dtype=torch.float64) * 2
    pi = joint_outcome(spec, th1, th2)
    emp = sample_joint(*_agents(spec, th1, th2), N_MC, semantics=semantics, seed=seed)
    _assert_within_3se(pi, emp, N_MC)


def test_shared_semantics_is_correlated_and_differs_from_fresh() -> None:
    # two copiers grounded in a fair coin: with shared randomness a copier predicts a grounded
    # opponent exactly; both ground (e²): asymmetric w.p. 1/2; both respond ((1-e)²): they swap a
    # shared deeper pair, asymmetric w.p. r again. r = e²/2 + (1-e)² r  =>  r = 1/6 at e = 1/2
    copier = torch.tensor([0.0, 40.0, -40.0], dtype=torch.float64)  # p = 1/2, q^C = 1, q^D = 0
    shared = joint_outcome(PolicySpec(epsilon=0.5, semantics="shared"), copier, copier)
    fresh = joint_outcome(PolicySpec(epsilon=0.5, semantics="fresh"), copier, copier)
    torch.testing.assert_close(float(shared[1] + shared[2]), 1 / 6)
    torch.testing.assert_close(float(fresh[1] + fresh[2]), 0.5)  # independent, x = 1/2 each
    torch.testing.assert_close(float(shared.sum()), 1.0)


def test_fresh_fixed_point_is_the_geometric_series_over_depth() -> None:
    spec = PolicySpec(epsilon=0.2, learn_e=True)
    g = torch.Generator().manual_seed(5)
    th = torch.randn(64, 2, 4, generator=g, dtype=torch.float64)
    x1, x2 = cooperation_probs(spec, th[:, 0], th[:, 1])
    e, p, qc, qd = (torch.stack(t, 1) for t in zip(unpack(spec, th[:, 0]), unpack(spec, th[:, 1])))
    # iterate x_i <- e_i p_i + (1-e_i)(q_i^D + (q_i^C - q_i^D) x_j): depth-d truncations
    x = torch.zeros(64, 2, dtype=torch.float64)
    for _ in range(300):
        x = e * p + (1 - e) * (qd + (qc - qd) * x.flip(1))
    torch.testing.assert_close(x[:, 0], x1)
    torch.testing.assert_close(x[:, 1], x2)


@pytest.mark.parametrize("semantics", ["fresh", "shared"])
def test_grounded_fairbots_cooperate_and_batching(semantics: str) -> None:
    spec = PolicySpec(epsilon=0.1, semantics=semantics)
    fairbot_c = torch.tensor([9.0, 30.0, -30.0], dtype=torch.float64)  # grounded in C, copies
    fairbot_d = torch.tensor([-30.0, 30.0, -30.0], dtype=torch.float64)
    assert float(joint_outcome(spec, fairbot_c, fairbot_c)[0]) > 0.999
    assert float(joint_outcome(spec, fairbot_d, fairbot_d)[3]) > 0.999
    # batched over a leading seed dimension == one at a time
    th = torch.randn(7, 2, 3, dtype=torch.float64)
    batched = joint_outcome(spec, th[:, 0], th[:, 1])
    single = torch.stack([joint_outcome(spec, t[0], t[1]) for t in th])
    torch.testing.assert_close(batched, single)


def test_mixed_baseline_and_payoffs() -> None:
    spec = PolicySpec(kind="mixed")
    th1, th2 = torch.tensor([0.0], dtype=torch.float64), torch.tensor([math.log(3)], dtype=torch.float64)
    pi = joint_outcome(spec, th1, th2)  # x1 = .5, x2 = .75
    torch.testing.assert_close(pi, torch.tensor([0.375, 0.125, 0.375, 0.125], dtype=torch.float64))
    u1, u2 = get_game("prisoners_dilemma").tensors()
    v1, v2 = values(spec, u1, u2, th1, th2)
    assert math.isclose(float(v1), 0.375 * 3 + 0.375 * 5 + 0.125 * 1)
    assert math.isclose(float(v2), 0.375 * 3 + 0.125 * 5 + 0.125 * 1)


def test_games_and_schema_names_agree() -> None:
    assert set(GAME_NAMES) == set(GAMES) | {"custom"}
    assert set(LEARNER_NAMES) == set(LEARNERS)
    pd = get_game("prisoners_dilemma")
    (R, S), (T, P) = pd.payoff1
    assert T > R > P > S and pd.payoff2 == ((R, T), (S, P))
    (R, S), (T, P) = get_game("chicken").payoff1
    assert T > R > S > P
    custom = get_game("custom", [[1, 2], [3, 4]], [[5, 6], [7, 8]])
    assert custom.payoff2 == ((5.0, 6.0), (7.0, 8.0))
    with pytest.raises(ValueError):
        get_game("custom", [[1, 2]], [[1, 2], [3, 4]])
