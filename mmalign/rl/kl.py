r"""Per-token KL estimators and the KL-coefficient controllers.

With the log-ratio :math:`\ell_t = \log\pi(y_t|\cdot) - \log\pi_{ref}(y_t|\cdot)` of a sampled token
(Schulman, "Approximating KL divergence"):

.. math::
    k_1 = \ell_t, \qquad k_2 = \tfrac12 \ell_t^2, \qquad k_3 = e^{-\ell_t} - 1 + \ell_t .

All three are estimators of :math:`KL(\pi\,\|\,\pi_{ref})` per token under samples from
:math:`\pi`; k1 is unbiased, k3 unbiased and non-negative, k2 biased with low variance.
As *loss* terms their gradients differ: :math:`\nabla k_2 = \ell_t \nabla\log\pi` is the exact
score-function gradient of :math:`KL(\pi\|\pi_{ref})`; :math:`E_\pi[\nabla k_3] = \nabla
KL(\pi_{ref}\|\pi)` (GRPO's choice); :math:`E_\pi[\nabla k_1] = 0`, so k1 is only meaningful as a
reward penalty.

``full`` is the exact per-token KL of the next-token distributions at each visited state,

.. math:: \kappa_t = \sum_v \pi(v|s_t)\,\big(\log\pi(v|s_t) - \log\pi_{ref}(v|s_t)\big),

whose sum over a sampled sequence is an unbiased estimate of the sequence KL with the sampling
noise of the token itself integrated out (Rao-Blackwellised). As a penalty it needs both
distributions (:func:`token_kl`), not only the sampled tokens' log-probs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ESTIMATORS = ("k1", "k2", "k3", "full")


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Elementwise KL estimate from the log-probs of the sampled tokens (same shape as inputs)."""
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # clamp keeps exp finite when the policy has drifted far from the reference
        neg = (-log_ratio).clamp(max=20.0)
        return torch.expm1(neg) + log_ratio.clamp(min=-20.0)
    if estimator == "full":
        raise ValueError("the 'full' KL estimator needs both next-token distributions: use token_kl")
    raise ValueError(f"unknown KL estimator '{estimator}' (choose from {', '.join(ESTIMATORS)})")


def token_kl(log_dist: torch.Tensor, ref_log_dist: torch.Tensor) -> torch.Tensor:
    """Exact KL(π(·|s_t) ‖ π_ref(·|s_t)) per position from log-distributions [..., V]; returns [...].

    Differentiable in ``log_dist``; with the states held fixed its gradient is the direct part of
    the sequence KL's gradient (the part through the visited states is the score-function term)."""
    return (log_dist.exp() * (log_dist - ref_log_dist)).sum(dim=-1)


@dataclass
class FixedKLController:
    """A constant coefficient :math:`\\beta`."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:  # noqa: ARG002 - same interface
        return None

    def state_dict(self) -> dict[str, float]:
        return {"value": float(self.value)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    r"""A proportional controller on :math:`\log\beta` (lm-human-preferences' error signal,
    Ziegler et al. 2019), bounded and with a warm-up:

    .. math::
        e = \operatorname{clip}\Big(\frac{KL}{KL_{target}} - 1,\,-0.2,\,0.2\Big), \qquad
        \log\beta \leftarrow \operatorname{clip}\big(\log\beta + e\, n / H,\;
        \log\beta_{min},\, \log\beta_{max}\big)

    where ``n`` is the number of episodes in the step and ``H`` the horizon; to first order in
    :math:`e\,n/H` this is lm-human-preferences' :math:`\beta(1 + e\,n/H)`, but it can never
    change sign and moves :math:`\log\beta` by at most :math:`0.2\,n/H` per step. The first
    ``warmup`` updates only count: a policy starts at the reference (KL = 0), so the raw
    controller would push :math:`\beta` down at the full rate on every early step, before the
    policy has had time to respond, and then overshoot the target once :math:`\beta` has
    collapsed. The clamp to :math:`[\beta_{min}, \beta_{max}]` bounds the damage of any such
    transient. ``current_kl`` is the mean per-sequence KL (summed over tokens) of the step's
    samples.
    """

    value: float
    target: float
    horizon: float
    beta_min: float = 0.0
    beta_max: float = math.inf
    warmup: int = 0
    updates: int = 0  # calls to update() so far (warm-up ones included)

    def update(self, current_kl: float, n_steps: int) -> None:
        self.updates += 1
        if not math.isfinite(current_kl) or self.updates <= self.warmup:
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value = min(max(self.value * math.exp(error * n_steps / self.horizon), self.beta_min), self.beta_max)

    def state_dict(self) -> dict[str, float]:
        return {"value": float(self.value), "target": float(self.target), "horizon": float(self.horizon),
                "beta_min": float(self.beta_min), "beta_max": float(self.beta_max), "warmup": int(self.warmup),
                "updates": int(self.updates)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.updates = int(state.get("updates", 0))


def make_kl_controller(kind: str, beta: float, target: float, horizon: float, *, beta_min: float | None = None,
                       beta_max: float | None = None, warmup: int = 0):
    """``fixed`` or ``adaptive`` controller starting at ``beta``; the adaptive one keeps
    :math:`\beta` in ``[beta_min, beta_max]`` (default ``[beta / 10, 10 beta]``) and holds it for
    the first ``warmup`` steps."""
    if kind == "fixed":
        return FixedKLController(beta)
    if kind == "adaptive":
        lo = beta / 10.0 if beta_min is None else beta_min
        hi = beta * 10.0 if beta_max is None else beta_max
        if not lo <= beta <= hi:
            raise ValueError(f"initial beta {beta:.4g} is outside [beta_min, beta_max] = [{lo:.4g}, {hi:.4g}]")
        return AdaptiveKLController(beta, target, horizon, lo, hi, warmup)
    raise ValueError(f"unknown KL controller '{kind}'")
