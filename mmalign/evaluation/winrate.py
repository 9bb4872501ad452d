r"""Inference-time win rates from samples, with bootstrap intervals over prompts.

For one prompt, draw M samples from the policy and M' from the reference. Each sample has a
*selection* reward s (used by best/worst-of-N to pick) and a *judge* reward j (decides the win).

An inference procedure T turns N i.i.d. samples into one output. From M ≥ N samples the
U-statistic estimate of "T's output is sample i" is a weight :math:`w_i` that depends only on the
rank k of :math:`s_i` among the M samples (k = 1 for the lowest):

.. math::

    \text{standard: } w_i = 1/M, \qquad
    \text{best-of-}N: w_i = \binom{k-1}{N-1} \Big/ \binom{M}{N}, \qquad
    \text{worst-of-}N: w_i = \binom{M-k}{N-1} \Big/ \binom{M}{N},

i.e. the probability that, among N samples drawn without replacement, sample i is the best
(worst). Samples tied on the selection reward share their weight equally (a random tie-break
among the N draws). The win rate of policy against reference for that prompt is then

.. math::

    W(x) = \sum_i \sum_l w^{\pi}_i\, w^{\text{ref}}_l\,
           \big(\mathbb{1}[j_i > j_l] + \tfrac12 \mathbb{1}[j_i = j_l]\big),

an unbiased estimate of :math:`P(T(\pi) \succ T(\pi_{ref}))` for that prompt. The reported win rate
is the mean over prompts; its 95% interval is a percentile bootstrap over prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mmalign.align.procedures import PROCEDURES, Procedure  # the one definition (with its label)
from mmalign.evaluation.stats import bootstrap_ci

__all__ = ["PROCEDURES", "Procedure", "WinRate", "kl_estimate", "prompt_win_rate", "selection_weights", "win_rate"]


def selection_weights(selection: np.ndarray, procedure: Procedure) -> np.ndarray:
    """Probability that each of the M samples is the procedure's output (U-statistic weights)."""
    s = np.asarray(selection, dtype=np.float64)
    m = s.shape[0]
    if procedure.name == "standard" or procedure.n == 1:
        return np.full(m, 1.0 / m)
    n = procedure.n
    if m < n:
        raise ValueError(f"{procedure.label} needs at least {n} samples per prompt, got {m}")
    order = np.argsort(s, kind="stable")
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(1, m + 1)
    total = math.comb(m, n)
    if procedure.name == "bon":
        w = np.array([math.comb(int(k) - 1, n - 1) for k in rank], dtype=np.float64)
    else:
        w = np.array([math.comb(m - int(k), n - 1) for k in rank], dtype=np.float64)
    w = w / total
    # Tied selection rewards: split the group's weight equally.
    _, group, sizes = np.unique(s, return_inverse=True, return_counts=True)
    if (sizes > 1).any():
        w = (np.bincount(group, weights=w) / sizes)[group]
    return w


def prompt_win_rate(policy_sel: np.ndarray, policy_judge: np.ndarray, ref_sel: np.ndarray,
                    ref_judge: np.ndarray, procedure: Procedure) -> float:
    """Unbiased win rate of ``procedure`` applied to policy vs reference samples of one prompt."""
    wp = selection_weights(policy_sel, procedure)
    wr = selection_weights(ref_sel, procedure)
    jp = np.asarray(policy_judge, dtype=np.float64)[:, None]
    jr = np.asarray(ref_judge, dtype=np.float64)[None, :]
    score = (jp > jr).astype(np.float64) + 0.5 * (jp == jr)
    return float(wp @ score @ wr)


@dataclass
class WinRate:
    """A win-rate estimate with its bootstrap interval."""

    procedure: str
    n: int
    win_rate: float
    ci_low: float
    ci_high: float
    per_prompt: list[float]

    def as_dict(self) -> dict:
        return {"procedure": self.procedure, "n": self.n, "win_rate": self.win_rate,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "num_prompts": len(self.per_prompt)}


def win_rate(policy_sel: list[np.ndarray], policy_judge: list[np.ndarray], ref_sel: list[np.ndarray],
             ref_judge: list[np.ndarray], procedure: Procedure, *, reps: int = 2000, seed: int = 0) -> WinRate:
    """Mean over prompts of :func:`prompt_win_rate`, with a bootstrap 95% interval over prompts."""
    if not (len(policy_sel) == len(policy_judge) == len(ref_sel) == len(ref_judge)):
        raise ValueError("policy and reference reward lists must cover the same prompts")
    per_prompt = np.array([
        prompt_win_rate(ps, pj, rs, rj, procedure)
        for ps, pj, rs, rj in zip(policy_sel, policy_judge, ref_sel, ref_judge)
    ])
    lo, hi = bootstrap_ci(per_prompt, reps=reps, seed=seed)
    return WinRate(procedure.name, procedure.n, float(per_prompt.mean()), lo, hi, per_prompt.tolist())


def kl_estimate(logratio_per_sample: list[np.ndarray]) -> tuple[float, float]:
    r"""KL(π‖π_ref) ≈ mean over prompts of the mean sequence log-ratio :math:`\log π(y|x) - \log π_{ref}(y|x)`
    over samples y ~ π; returns (estimate, standard error over prompts)."""
    per_prompt = np.array([np.mean(np.asarray(v, dtype=np.float64)) for v in logratio_per_sample])
    if per_prompt.size == 0:
        raise ValueError("no samples for the KL estimate")
    se = float(per_prompt.std(ddof=1) / math.sqrt(per_prompt.size)) if per_prompt.size > 1 else float("nan")
    return float(per_prompt.mean()), se
