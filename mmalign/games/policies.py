r"""Transparent ε-grounded policies and the closed-form distribution of the joint outcome.

Agent i has unconstrained logits θ_i. A *transparent* agent, with probability e_i, plays the
opponent-independent mixed action (C with probability p_i = σ(θ_i^0)); otherwise it predicts the
opponent's action against itself, â, and plays C with probability q_i^â (q_i^C = σ(θ_i^C),
q_i^D = σ(θ_i^D)). The grounding probability is either fixed, e_i = ε, or learnable,
e_i = ε + (1−ε)σ(θ_i^e) ≥ ε. The *mixed* (non-transparent) baseline plays C with probability σ(θ_i^0).

Two prediction semantics:

* ``fresh``: every simulation is a fresh call with its own randomness. With x_i = P(i plays C),
  a_i = e_i p_i + (1−e_i) q_i^D and b_i = (1−e_i)(q_i^C − q_i^D), mutual simulation gives
  x_1 = a_1 + b_1 x_2 and x_2 = a_2 + b_2 x_1, whose fixed point (the sum of the geometric series
  over simulation depth, |b_1 b_2| ≤ (1−ε)² < 1) is

      x_1 = (a_1 + b_1 a_2) / (1 − b_1 b_2),   x_2 = (a_2 + b_2 a_1) / (1 − b_1 b_2).

  The two real actions come from independent call trees: P(a_1, a_2) = P(a_1) P(a_2).

* ``shared``: a simulation reads the same random tape as the thing it simulates (the tape is
  indexed by agent and depth). So a grounded agent is predicted exactly (its real ε coin and
  action are reused), and when both real agents respond, each one's simulation of the other
  would loop back to itself; the loop is cut one level deeper, where both agents' copies draw
  new coins and form a common simulated pair (b_1, b_2) that both real agents respond to. With
  g_i = (p_i, 1−p_i), Q_i[a|b] the response probabilities, and π the joint distribution over
  (CC, CD, DC, DD):

      π = c + (1−e_1)(1−e_2) M π,   M[(a_1,a_2),(b_1,b_2)] = Q_1[a_1|b_2] Q_2[a_2|b_1],
      c[a_1,a_2] = e_1e_2 g_1[a_1]g_2[a_2] + e_1(1−e_2) g_1[a_1]Q_2[a_2|a_1] + (1−e_1)e_2 Q_1[a_1|a_2]g_2[a_2],

  i.e. π = (I − (1−e_1)(1−e_2)M)⁻¹ c, a geometric series over the depth at which someone grounds.
  Predictions, hence actions, are correlated.

All functions take θ with any leading batch shape (``[..., n_params]``) and are differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("transparent", "mixed")
SEMANTICS = ("fresh", "shared")
OUTCOME_ORDER = ("CC", "CD", "DC", "DD")


@dataclass(frozen=True)
class PolicySpec:
    """How θ maps to behaviour: transparent or mixed, ε, fixed or learnable e, semantics."""

    kind: str = "transparent"
    epsilon: float = 0.1
    learn_e: bool = False
    semantics: str = "fresh"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {self.semantics!r}")
        if not 0.0 < self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in (0, 1], got {self.epsilon}")

    @property
    def n_params(self) -> int:
        """Logits per agent: θ^0 (mixed); θ^0, θ^C, θ^D (+ θ^e when e is learnable)."""
        if self.kind == "mixed":
            return 1
        return 4 if self.learn_e else 3


def unpack(spec: PolicySpec, th: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e, p, q^C, q^D) from logits θ ``[..., n_params]``; each ``[...]``."""
    p = torch.sigmoid(th[..., 0])
    if spec.kind == "mixed":
        one = torch.ones_like(p)
        return one, p, p, p
    qc, qd = torch.sigmoid(th[..., 1]), torch.sigmoid(th[..., 2])
    if spec.learn_e:
        e = spec.epsilon + (1.0 - spec.epsilon) * torch.sigmoid(th[..., 3])
    else:
        e = torch.full_like(p, spec.epsilon)
    return e, p, qc, qd


def cooperation_probs(spec: PolicySpec, th1: torch.Tensor, th2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh-call marginals (x_1, x_2) = P(each agent plays C): the mutual-simulation fixed point."""
    e1, p1, qc1, qd1 = unpack(spec, th1)
    e2, p2, qc2, qd2 = unpack(spec, th2)
    a1, b1 = e1 * p1 + (1 - e1) * qd1, (1 - e1) * (qc1 - qd1)
    a2, b2 = e2 * p2 + (1 - e2) * qd2, (1 - e2) * (qc2 - qd2)
    det = 1 - b1 * b2
    return (a1 + b1 * a2) / det, (a2 + b2 * a1) / det


def _independent(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return torch.stack([x1 * x2, x1 * (1 - x2), (1 - x1) * x2, (1 - x1) * (1 - x2)], dim=-1)


def _shared_joint(spec: PolicySpec, th1: torch.Tensor, th2: torch.Tensor) -> torch.Tensor:
    e1, p1, qc1, qd1 = unpack(spec, th1)
    e2, p2, qc2, qd2 = unpack(spec, th2)
    g1 = torch.stack([p1, 1 - p1], -1)  # [..., a1]
    g2 = torch.stack([p2, 1 - p2], -1)
    # Q[..., a, b] = P(play a | predicted opponent action b)
    Q1 = torch.stack([torch.stack([qc1, qd1], -1), torch.stack([1 - qc1, 1 - qd1], -1)], -2)
    Q2 = torch.stack([torch.stack([qc2, qd2], -1), torch.stack([1 - qc2, 1 - qd2], -1)], -2)
    E1, E2 = e1[..., None, None], e2[..., None, None]
    c = (E1 * E2 * g1[..., :, None] * g2[..., None, :]
         + E1 * (1 - E2) * g1[..., :, None] * Q2.transpose(-1, -2)  # Q2[a2|a1] at [a1, a2]
         + (1 - E1) * E2 * Q1 * g2[..., None, :])                    # Q1[a1|a2] at [a1, a2]
    # M[a1, a2, b1, b2] = Q1[a1|b2] Q2[a2|b1]
    M = torch.einsum("...ad,...bc->...abcd", Q1, Q2).reshape(*Q1.shape[:-2], 4, 4)
    k = ((1 - e1) * (1 - e2))[..., None, None]
    eye = torch.eye(4, dtype=M.dtype, device=M.device)
    return torch.linalg.solve(eye - k * M, c.reshape(*c.shape[:-2], 4))


def joint_outcome(spec: PolicySpec, th1: torch.Tensor, th2: torch.Tensor) -> torch.Tensor:
    """P(a_1, a_2) in (CC, CD, DC, DD) order, ``[..., 4]``."""
    if spec.kind == "mixed":
        return _independent(torch.sigmoid(th1[..., 0]), torch.sigmoid(th2[..., 0]))
    if spec.semantics == "fresh":
        return _independent(*cooperation_probs(spec, th1, th2))
    return _shared_joint(spec, th1, th2)


def values(spec: PolicySpec, payoff1: torch.Tensor, payoff2: torch.Tensor, th1: torch.Tensor,
           th2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected payoffs V_i = Σ_{a} P(a) u_i(a) with payoffs flattened in (CC, CD, DC, DD) order."""
    pi = joint_outcome(spec, th1, th2)
    return pi @ payoff1, pi @ payoff2
