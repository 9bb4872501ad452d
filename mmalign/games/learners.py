r"""Naive gradient, look-ahead, LOLA and SOS updates with exact derivatives (``torch.func``).

Written with losses L^i = −V^i as in Letcher et al. (2019). Let ξ = (∇_1 L^1, ∇_2 L^2) and

    (H_o ξ)_1 = ∇_1∇_2 L^1 · ∇_2 L^2,   (H_o ξ)_2 = ∇_2∇_1 L^2 · ∇_1 L^1      (off-diagonal Hessian)
    χ_1 = ∇_1∇_2 L^2 · ∇_2 L^1,         χ_2 = ∇_2∇_1 L^1 · ∇_1 L^2          (shaping term)

with learning rate α and look-ahead η (the opponent's assumed step size). The updates are

    naive   θ ← θ − α ξ
    la      θ ← θ − α (ξ − η H_o ξ)
    lola    θ ← θ − α (ξ − η χ)              Foerster et al. (2018), exact:
            Δθ_1 = α ∇_1 V^1 + α η (∇_2 V^1)ᵀ ∇_1∇_2 V^2
    lola with ``taylor=True``: θ ← θ − α (ξ − η H_o ξ − η χ)   (full Taylor form, as in SOS)
    sos     ξ_0 = ξ − η H_o ξ;  θ ← θ − α (ξ_0 − p η χ)  with
            p_1 = 1 if ⟨−ηχ, ξ_0⟩ ≥ 0 else min(1, −a‖ξ_0‖² / ⟨−ηχ, ξ_0⟩)
            p_2 = ‖ξ‖² if ‖ξ‖ < b else 1,   p = min(p_1, p_2)

SOS with p = 1 is the full-Taylor LOLA and with p = 0 it is look-ahead. All parameters carry a
leading seed dimension ``[S, d]``; seeds never interact, so the gradient of the seed-summed loss
is the per-seed gradient and one jvp of it gives every seed's Hessian-vector product at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, jvp

LEARNERS = ("naive", "la", "lola", "sos")

ValueFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LearnerSpec:
    """Which update rule and its step sizes; ``lookahead=None`` means η = α."""

    name: str = "lola"
    lr: float = 1.0
    lookahead: float | None = None
    taylor: bool = False
    sos_a: float = 0.5
    sos_b: float = 0.1
    sos_p: float | None = None  # force p (tests, ablations); None uses the SOS criteria

    def __post_init__(self) -> None:
        if self.name not in LEARNERS:
            raise ValueError(f"learner must be one of {LEARNERS}, got {self.name!r}")

    @property
    def eta(self) -> float:
        return self.lr if self.lookahead is None else self.lookahead


def _mixed(loss: Callable, wrt: int, th1: torch.Tensor, th2: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """∇_wrt ∇_other loss · v: the jvp of θ_other ↦ ∇_wrt loss in direction v (per seed)."""
    g = grad(loss, argnums=wrt)
    with warnings.catch_warnings():  # torch's first jvp loads decompositions via torch.jit.script
        warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated")
        if wrt == 0:
            return jvp(lambda t2: g(th1, t2), (th2,), (v,))[1]
        return jvp(lambda t1: g(t1, th2), (th1,), (v,))[1]


def update(values: ValueFn, th1: torch.Tensor, th2: torch.Tensor, spec: LearnerSpec
           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One simultaneous update of both agents; returns (θ_1', θ_2', info) with info["p"] for SOS."""
    def L1(t1, t2):
        return -values(t1, t2)[0].sum()

    def L2(t1, t2):
        return -values(t1, t2)[1].sum()

    alpha, eta = spec.lr, spec.eta
    d1L1, d2L1 = grad(L1, argnums=(0, 1))(th1, th2)
    d1L2, d2L2 = grad(L2, argnums=(0, 1))(th1, th2)
    xi1, xi2 = d1L1, d2L2
    info: dict[str, torch.Tensor] = {}

    if spec.name == "naive":
        return th1 - alpha * xi1, th2 - alpha * xi2, info

    # shaping term χ (LOLA, SOS) and off-diagonal look-ahead term H_o ξ (LA, Taylor LOLA, SOS)
    need_chi = spec.name in ("lola", "sos")
    need_ho = spec.name in ("la", "sos") or (spec.name == "lola" and spec.taylor)
    if need_chi:
        chi1 = _mixed(L2, 0, th1, th2, d2L1)
        chi2 = _mixed(L1, 1, th1, th2, d1L2)
    if need_ho:
        ho1 = _mixed(L1, 0, th1, th2, xi2)
        ho2 = _mixed(L2, 1, th1, th2, xi1)

    if spec.name == "la":
        step1, step2 = xi1 - eta * ho1, xi2 - eta * ho2
    elif spec.name == "lola":
        step1, step2 = xi1 - eta * chi1, xi2 - eta * chi2
        if spec.taylor:
            step1, step2 = step1 - eta * ho1, step2 - eta * ho2
    else:  # sos
        xi = torch.cat([xi1, xi2], -1)
        xi0 = torch.cat([xi1 - eta * ho1, xi2 - eta * ho2], -1)
        chi = torch.cat([chi1, chi2], -1)
        if spec.sos_p is not None:
            p = torch.full(xi.shape[:-1], float(spec.sos_p), dtype=xi.dtype, device=xi.device)
        else:
            dot = (-eta * chi * xi0).sum(-1)
            safe = torch.where(dot < 0, dot, -torch.ones_like(dot))
            p1 = torch.where(dot >= 0, torch.ones_like(dot),
                             torch.clamp(-spec.sos_a * (xi0 * xi0).sum(-1) / safe, max=1.0))
            norm = xi.norm(dim=-1)
            p2 = torch.where(norm < spec.sos_b, norm**2, torch.ones_like(norm))
            p = torch.minimum(p1, p2)
        info["p"] = p
        step = xi0 - p[..., None] * eta * chi
        d1 = th1.shape[-1]
        step1, step2 = step[..., :d1], step[..., d1:]
    return th1 - alpha * step1, th2 - alpha * step2, info
