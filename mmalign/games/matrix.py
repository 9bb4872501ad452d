"""2×2 matrix games. Action 0 is C (cooperate / swerve / stag / heads), action 1 is D.

``payoff1[a1][a2]`` is the row player's payoff and ``payoff2[a1][a2]`` the column player's, both
indexed by (row action, column action). Payoffs are maximised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Matrix = tuple[tuple[float, float], tuple[float, float]]


def _transpose(m: Matrix) -> Matrix:
    return ((m[0][0], m[1][0]), (m[0][1], m[1][1]))


def symmetric(R: float, S: float, T: float, P: float) -> tuple[Matrix, Matrix]:
    """A symmetric game from reward R (CC), sucker S (CD), temptation T (DC) and punishment P (DD)."""
    row = ((R, S), (T, P))
    return row, _transpose(row)


@dataclass(frozen=True)
class MatrixGame:
    """A named pair of 2×2 payoff matrices."""

    name: str
    payoff1: Matrix
    payoff2: Matrix

    def tensors(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The payoff matrices flattened to length-4 vectors in (CC, CD, DC, DD) order."""
        a = torch.tensor(self.payoff1, dtype=dtype, device=device).reshape(4)
        b = torch.tensor(self.payoff2, dtype=dtype, device=device).reshape(4)
        return a, b


_MP = ((1.0, -1.0), (-1.0, 1.0))

GAMES: dict[str, tuple[Matrix, Matrix]] = {
    # T > R > P > S
    "prisoners_dilemma": symmetric(R=3.0, S=0.0, T=5.0, P=1.0),
    # T > R > S > P: mutual dare (DD) is the worst outcome for both
    "chicken": symmetric(R=3.0, S=1.0, T=4.0, P=0.0),
    # R > T >= P > S: two pure equilibria, CC payoff-dominant, DD risk-dominant
    "stag_hunt": symmetric(R=4.0, S=1.0, T=3.0, P=2.0),
    # zero-sum: the row player wins on a match
    "matching_pennies": (_MP, ((-1.0, 1.0), (1.0, -1.0))),
}


def _as_matrix(m, what: str) -> Matrix:
    try:
        rows = [list(r) for r in m]
        if len(rows) != 2 or any(len(r) != 2 for r in rows):
            raise ValueError
        return ((float(rows[0][0]), float(rows[0][1])), (float(rows[1][0]), float(rows[1][1])))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a 2x2 list of numbers, got {m!r}") from None


def get_game(name: str, payoff1=None, payoff2=None) -> MatrixGame:
    """A built-in game by name, or ``custom`` with both payoff matrices given."""
    if name == "custom":
        if payoff1 is None or payoff2 is None:
            raise ValueError("a custom game needs payoff1 and payoff2")
        return MatrixGame("custom", _as_matrix(payoff1, "payoff1"), _as_matrix(payoff2, "payoff2"))
    if name not in GAMES:
        raise ValueError(f"unknown game '{name}' (known: {', '.join(sorted(GAMES))}, custom)")
    p1, p2 = GAMES[name]
    return MatrixGame(name, p1, p2)
