"""Two-player 2×2 matrix games between transparent, ε-grounded agents, and opponent-aware learners.

This package depends only on torch (and the standard library): games (``matrix``), closed-form
joint outcome distributions of transparent policies (``policies``), naive / look-ahead / LOLA / SOS
updates with exact derivatives (``learners``), a vectorised training loop and outcome statistics
(``train``), and Monte Carlo agents that really simulate each other (``simulate``).
"""

from mmalign.games.learners import LEARNERS, LearnerSpec, update
from mmalign.games.matrix import GAMES, MatrixGame, get_game
from mmalign.games.policies import KINDS, SEMANTICS, PolicySpec, joint_outcome, values
from mmalign.games.train import OUTCOMES, TrainResult, outcome_stats, train

__all__ = [
    "GAMES", "KINDS", "LEARNERS", "OUTCOMES", "SEMANTICS", "LearnerSpec", "MatrixGame", "PolicySpec",
    "TrainResult", "get_game", "joint_outcome", "outcome_stats", "train", "update", "values",
]
