"""Monte Carlo agents that really simulate each other, to check the closed forms in ``policies``.

An agent is a Python function; predicting the opponent means *calling* the opponent's function
against yourself. The ε coin stops the regress: with ``fresh`` semantics every call draws new
randomness, with ``shared`` semantics every call of agent i at depth d reads the same memoised
random tape, so a simulation reproduces the simulated agent's real draws.
"""

from __future__ import annotations

import random
import sys
from collections import Counter

from mmalign.games.policies import OUTCOME_ORDER

C, D = 0, 1


class Agent:
    """Behaviour of one ε-grounded transparent agent as plain probabilities."""

    def __init__(self, e: float, p: float, qc: float, qd: float) -> None:
        self.e, self.p, self.q = e, p, (qc, qd)


def play_fresh(a1: Agent, a2: Agent, rng: random.Random) -> tuple[int, int]:
    """One real play: each agent's call tree uses its own fresh randomness at every call."""
    agents = (a1, a2)

    def act(i: int) -> int:
        me = agents[i]
        if rng.random() < me.e:
            return C if rng.random() < me.p else D
        predicted = act(1 - i)  # a fresh call of the opponent against me
        return C if rng.random() < me.q[predicted] else D

    return act(0), act(1)


def play_shared(a1: Agent, a2: Agent, rng: random.Random) -> tuple[int, int]:
    """One real play with a shared random tape indexed by (agent, depth).

    The real agents run at depth 0. Agent i predicts agent j by running j at the same depth, so it
    reuses j's real coins, unless j would respond too, in which case that simulation would call
    agent i at the same depth again (an infinite loop on the same tape): the loop is cut by going
    one level deeper, to fresh coins shared by every call at that depth.
    """
    agents = (a1, a2)
    tape: dict[tuple[int, int], tuple[float, float, float]] = {}

    def coins(i: int, depth: int) -> tuple[float, float, float]:
        if (i, depth) not in tape:
            tape[i, depth] = (rng.random(), rng.random(), rng.random())
        return tape[i, depth]

    def act(i: int, depth: int) -> int:
        me, (ground, ground_action, response) = agents[i], coins(i, depth)
        if ground < me.e:
            return C if ground_action < me.p else D
        j = 1 - i
        opponent_responds = coins(j, depth)[0] >= agents[j].e
        predicted = act(j, depth + 1 if opponent_responds else depth)
        return C if response < me.q[predicted] else D

    return act(0, 0), act(1, 0)


def sample_joint(a1: Agent, a2: Agent, n: int, semantics: str = "fresh", seed: int = 0) -> dict[str, float]:
    """Empirical frequencies of (CC, CD, DC, DD) over ``n`` real plays."""
    rng = random.Random(seed)
    play = play_fresh if semantics == "fresh" else play_shared
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        counts = Counter(play(a1, a2, rng) for _ in range(n))
    finally:
        sys.setrecursionlimit(limit)
    return {name: counts[(k // 2, k % 2)] / n for k, name in enumerate(OUTCOME_ORDER)}
