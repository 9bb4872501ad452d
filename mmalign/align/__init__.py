r"""Inference-aware alignment math (InfAlign): pure functions on tensors and arrays, no model code.

Calibrated reward, transformed reward and the aligned policy:

.. math::
    c(x,y) = P_{z\sim ref}(r(x,z) < r(x,y)) + \tfrac12 P_{z\sim ref}(r(x,z) = r(x,y)),\qquad
    \pi(y|x) \propto \pi_{ref}(y|x)\, e^{\Phi(c(x,y))/\beta}.

Python API (what the trainer and the evaluators import):

``calibrate(ref_rewards, rewards, ref_lengths=None)``
    empirical c for candidate rewards against (ragged) reference rewards, any device.
``score(rewards, ref_rewards, n, transform=None, bond_n=None)``
    the score the RL step maximises: :math:`\Phi(c)` (CTRL), BOND's :math:`(N-1)\log c`, or the raw
    reward; with ``calibrated_rewards``, ``transformed``, ``bond_log_ratio`` (:mod:`mmalign.align.scores`).
``get_transform(name, t=None, k=None)``
    :math:`\Phi` as a callable on numpy arrays and torch tensors (identity, log, exp, neg_exp, power).
``get_procedure(name, n)``
    standard / bon / won: win-rate functional on a grid and ``select`` on sampled rewards.
``beta_for_kl(transform, kl)``, ``kl_divergence(transform, beta)``, ``win_rate(transform, beta, procedure, n)``
    exact calculus of a tilt; ``beta_for_raw_reward(spread, kl)`` scales the identity tilt's
    :math:`\beta` to an uncalibrated reward's spread (raw RLHF's initial :math:`\beta`).
``best_t(procedure, n, kl)``
    best t of exp (BoN) / neg_exp (WoN) at a KL; returns a ``TunedTransform`` with ``.transform``
    (t in ``.transform.t``), ``.beta`` and ``.win_rate``.
``robust_t(procedure, n, kl, tolerance)``
    the smallest t within ``tolerance`` of the best t's exact win rate (a larger, learnable
    :math:`\beta`); what ``transform.name: auto`` trains with.
``optimal_policy(procedure, n, kl)`` / ``optimal_transform(procedure, n, kl)``
    the win-rate-optimal :math:`\Phi^*` (tabulated, callable on tensors).
``frontier(procedure, n, kls, transforms)``, ``recommend(procedure, n, kl)``
    the records behind ``mmalign frontier`` and ``mmalign frontier recommend``.

This package imports nothing but torch, numpy, scipy, the standard library and ``mmalign.errors``
(``tests/test_import_graph.py`` holds it to that). The reference rewards kept on disk across runs
are :class:`mmalign.rl.calibration_store.CalibrationStore`.
"""

from mmalign.align.frontier import FrontierPoint, Recommendation, frontier, recommend
from mmalign.align.procedures import PROCEDURES, Procedure, get_procedure
from mmalign.align.transforms import ALL_TRANSFORMS, TRANSFORMS, Transform, get_transform

# imported on first use (a name here must not be a submodule's): the calculus needs scipy, calibration and scores need torch (so that the
# config schemas and the CLI can read the registries above cheaply)
_LAZY = {name: "analytic" for name in (
    "BestOfNOptimum", "OptimalPolicy", "TunedTransform", "best_of_n_optimum", "best_t", "beta_for_kl",
    "beta_for_raw_reward", "evaluate",
    "kl_divergence", "make_grid", "optimal_policy", "optimal_transform", "policy_at_kl", "robust_t", "win_rate")}
_LAZY |= {"calibrate": "calibration", "Scores": "scores", "bond_log_ratio": "scores",
          "calibrated_rewards": "scores", "score": "scores", "transformed": "scores"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"mmalign.align.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mmalign.align' has no attribute {name!r}")


__all__ = [
    "ALL_TRANSFORMS",
    "BestOfNOptimum",
    "PROCEDURES",
    "TRANSFORMS",
    "FrontierPoint",
    "OptimalPolicy",
    "Procedure",
    "Recommendation",
    "Transform",
    "TunedTransform",
    "best_of_n_optimum",
    "best_t",
    "robust_t",
    "beta_for_kl",
    "beta_for_raw_reward",
    "bond_log_ratio",
    "calibrate",
    "calibrated_rewards",
    "evaluate",
    "frontier",
    "get_procedure",
    "get_transform",
    "kl_divergence",
    "make_grid",
    "optimal_policy",
    "optimal_transform",
    "policy_at_kl",
    "recommend",
    "score",
    "Scores",
    "transformed",
    "win_rate",
]
