r"""Inference-time procedures and their win-rate functionals.

A procedure draws N samples and keeps one. Applied to a policy whose calibrated reward has CDF
:math:`G`, the kept sample has CDF :math:`H(G)`:

* ``standard`` (one sample):  :math:`H(u) = u`
* ``bon`` (best-of-N, keep the highest reward):  :math:`H(u) = u^N`
* ``won`` (worst-of-N, keep the lowest reward):  :math:`H(u) = 1 - (1-u)^N`

Under the reference policy c is uniform, so its kept sample has CDF :math:`H(c)`. The
inference-time win rate (ties count half) is

.. math::  W(G) = P(X_\pi > X_{ref}) = \int_0^1 H(c)\, dH(G(c)) = 1 - \int_0^1 H(G(c))\, H'(c)\, dc,

which gives :math:`W = \int c\, g` (standard),
:math:`W = 1 - N\int c^{N-1} G^N` (best-of-N) and
:math:`W = \int N(1-c)^{N-1}(1-G)^N` (worst-of-N). Its functional derivative, the "reward" whose
tilt is the optimal policy, is

.. math::  \frac{\delta W}{\delta g}(u) = -\int_u^1 H'(G(c))\, H'(c)\, dc \quad(+\text{const}).

On a grid of cells (:mod:`mmalign.align.analytic`) both distributions are discrete, and
:meth:`Procedure.win_rate` / :meth:`Procedure.reward` are the exact discrete counterparts (ties
within a cell count half).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mmalign.errors import UserError

if TYPE_CHECKING:
    import torch

PROCEDURES: tuple[str, ...] = ("standard", "bon", "won")


@dataclass(frozen=True)
class Procedure:
    """An inference procedure: ``name`` in :data:`PROCEDURES` and its number of samples ``n``.

    The one definition that align, evaluation (:mod:`mmalign.evaluation.winrate`), the configs,
    plots and the CLI share; :attr:`label` is how reports and plots name it (``best-of-4``).
    An unknown name or an ``n`` that is not a positive integer raises a one-line UserError.
    """

    name: str
    n: int = 1

    def __post_init__(self) -> None:
        if self.name not in PROCEDURES:
            close = difflib.get_close_matches(str(self.name), PROCEDURES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"unknown procedure '{self.name}'{hint}; choose from {', '.join(PROCEDURES)}")
        if isinstance(self.n, bool) or not isinstance(self.n, (int, float)) or int(self.n) != self.n or self.n < 1:
            raise UserError(f"n must be a positive integer, got {self.n}")

    @property
    def label(self) -> str:
        """``standard``, ``best-of-N`` or ``worst-of-N``."""
        if self.name == "standard":
            return "standard"
        return f"{'best' if self.name == 'bon' else 'worst'}-of-{self.n}"

    # -- CDF of the kept sample ------------------------------------------------------------
    def cdf_map(self, u: np.ndarray) -> np.ndarray:
        """:math:`H(u)`: CDF of the kept sample when one sample has CDF u."""
        if self.name == "bon":
            return u**self.n
        if self.name == "won":
            return 1.0 - (1.0 - u) ** self.n
        return u * 1.0

    def cdf_map_deriv(self, u: np.ndarray) -> np.ndarray:
        """:math:`H'(u)`."""
        n = self.n
        if self.name == "bon":
            return n * u ** (n - 1)
        if self.name == "won":
            return n * (1.0 - u) ** (n - 1)
        return np.ones_like(u)

    # -- discrete functionals --------------------------------------------------------------
    def _ref_mid(self, ref_cdf: np.ndarray) -> np.ndarray:
        """:math:`m_j = (H(Q_j) + H(Q_{j+1}))/2`: P(ref output below cell j) + ½P(in cell j)."""
        h = self.cdf_map(ref_cdf)
        return 0.5 * (h[:-1] + h[1:])

    def win_rate(self, cdf: np.ndarray, ref_cdf: np.ndarray) -> float:
        r"""Exact win rate of two distributions on the same ordered cells, ties half.

        ``cdf`` and ``ref_cdf`` are the CDFs at the M+1 cell edges (0 first, 1 last):
        :math:`W = \sum_j [H(F_{j+1}) - H(F_j)]\,(H(Q_j) + H(Q_{j+1}))/2`.
        """
        return float(np.sum(np.diff(self.cdf_map(cdf)) * self._ref_mid(ref_cdf)))

    def reward(self, cdf: np.ndarray, ref_cdf: np.ndarray) -> np.ndarray:
        r"""Gradient of :meth:`win_rate` in the cell masses (the discrete :math:`\delta W/\delta g`):

        :math:`r_j = -\sum_{k=j+1}^{M-1} H'(F_k)\,(m_k - m_{k-1})`, increasing in j.
        """
        m = self._ref_mid(ref_cdf)
        terms = self.cdf_map_deriv(cdf[1:-1]) * np.diff(m)  # k = 1 .. M-1
        tail = np.cumsum(terms[::-1])[::-1]  # sum_{k >= j+1}, j = 0 .. M-2
        return -np.concatenate([tail, [0.0]])

    # -- on samples ------------------------------------------------------------------------
    def select(self, rewards: torch.Tensor) -> torch.Tensor:
        """Index (along the last dim) of the sample the procedure keeps from ``rewards[..., N]``."""
        import torch

        if self.name == "bon":
            return rewards.argmax(dim=-1)
        if self.name == "won":
            return rewards.argmin(dim=-1)
        return torch.zeros(rewards.shape[:-1], dtype=torch.long, device=rewards.device)

    def describe(self) -> str:
        return self.name if self.name == "standard" else f"{self.name}(N={self.n})"


def get_procedure(name: str, n: int = 1) -> Procedure:
    """Validated :class:`Procedure`; ``standard`` always uses one sample (n is ignored)."""
    Procedure(name, n)  # validates both
    return Procedure(name, 1 if name == "standard" else int(n))
