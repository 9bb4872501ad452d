"""Train both agents with one learner, vectorised over seeds, and summarise the final outcomes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from mmalign.games.learners import LearnerSpec, update
from mmalign.games.matrix import MatrixGame
from mmalign.games.policies import OUTCOME_ORDER, PolicySpec, joint_outcome, values

OUTCOMES = OUTCOME_ORDER


@dataclass
class TrainResult:
    """Final parameters and joint outcomes per seed, plus seed-averaged learning curves."""

    th1: torch.Tensor                 # [S, d]
    th2: torch.Tensor                 # [S, d]
    joint: torch.Tensor               # [S, 4] final P(CC, CD, DC, DD)
    value1: torch.Tensor              # [S]
    value2: torch.Tensor              # [S]
    history: dict[str, list[float]] = field(default_factory=dict)


def _curve_point(joint: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor) -> dict[str, float]:
    m = joint.mean(0)
    return {"p_cc": float(m[0]), "p_cd": float(m[1]), "p_dc": float(m[2]), "p_dd": float(m[3]),
            "value1": float(v1.mean()), "value2": float(v2.mean())}


def train(game: MatrixGame, policy: PolicySpec, learner: LearnerSpec, *, seeds: int, steps: int,
          init_std: float = 1.0, seed: int = 0, log_every: int = 10, dtype: torch.dtype = torch.float64,
          device: str | torch.device = "cpu", on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Run ``steps`` simultaneous updates for ``seeds`` independent pairs with θ ~ N(0, init_std²)."""
    gen = torch.Generator().manual_seed(int(seed))
    d = policy.n_params
    th1 = (torch.randn(seeds, d, generator=gen, dtype=dtype) * init_std).to(device)
    th2 = (torch.randn(seeds, d, generator=gen, dtype=dtype) * init_std).to(device)
    u1, u2 = game.tensors(dtype, device)
    vfn = partial(values, policy, u1, u2)
    history: dict[str, list[float]] = {"step": []}

    def log(step: int) -> None:
        with torch.no_grad():
            joint = joint_outcome(policy, th1, th2)
            point = _curve_point(joint, joint @ u1, joint @ u2)
        history["step"].append(step)
        for k, v in point.items():
            history.setdefault(k, []).append(v)

    log(0)
    for step in range(1, steps + 1):
        th1, th2, _ = update(vfn, th1, th2, learner)
        th1, th2 = th1.detach(), th2.detach()
        if step % log_every == 0 or step == steps:
            log(step)
        if on_step is not None:
            on_step(step)
    with torch.no_grad():
        joint = joint_outcome(policy, th1, th2)
    return TrainResult(th1, th2, joint, joint @ u1, joint @ u2, history)


def outcome_stats(joint: torch.Tensor, value1: torch.Tensor, value2: torch.Tensor,
                  threshold: float = 0.9) -> dict[str, float]:
    """Seed-level summary of final outcomes.

    ``share_<o>``: runs whose final P(o) > threshold (``share_mixed``: none is); ``argmax_<o>``:
    runs whose most likely outcome is o; ``mean_p_<o>``: mean final P(o); ``share_asymmetric``
    = share_cd + share_dc. Mutual cooperation is CC, mutual defection (or dare, in chicken) DD.
    """
    joint = joint.detach().double().cpu()
    n = joint.shape[0]
    stats: dict[str, float] = {"seeds": float(n)}
    above = joint > threshold
    top = joint.argmax(-1)
    for k, name in enumerate(OUTCOMES):
        o = name.lower()
        stats[f"mean_p_{o}"] = float(joint[:, k].mean())
        stats[f"share_{o}"] = float(above[:, k].float().mean())
        stats[f"argmax_{o}"] = float((top == k).float().mean())
    stats["share_asymmetric"] = stats["share_cd"] + stats["share_dc"]
    stats["share_mixed"] = float((~above.any(-1)).float().mean())
    stats["mean_value1"] = float(value1.double().mean())
    stats["mean_value2"] = float(value2.double().mean())
    return stats
