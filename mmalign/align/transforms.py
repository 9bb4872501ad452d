r"""Reward transforms :math:`\Phi` applied to the calibrated reward :math:`c \in [0, 1]`.

The aligned policy is the tilt

.. math::  \pi(y|x) \;\propto\; \pi_{ref}(y|x)\, \exp\big(\Phi(c(x,y)) / \beta\big).

Registry (each is vectorised on numpy arrays and torch tensors):

=========  =====================================================  ==========================
name       :math:`\Phi(c)`                                        use
=========  =====================================================  ==========================
identity   :math:`c`                                              standard sampling (optimal)
log        :math:`\log c`                                         (BoN win rate independent of N)
exp        :math:`(e^{tc} - 1) / (e^{t} - 1)`                     best-of-N
neg_exp    :math:`(1 - e^{-tc}) / (1 - e^{-t})`                   worst-of-N
power      :math:`c^k`
optimal    tabulated :math:`\Phi^*` from :func:`mmalign.align.analytic.optimal_transform`
=========  =====================================================  ==========================

``exp`` and ``neg_exp`` are the paper's :math:`e^{tc}` and :math:`-e^{-tc}` mapped affinely onto
[0, 1]. An affine map :math:`a\Phi + b` only rescales the coefficient (:math:`\beta \to a\beta`;
:math:`b` cancels in the normaliser), so the policies are the same and :math:`\beta` stays
comparable across t. Both are evaluated in a form that cannot overflow for any t > 0.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmalign.errors import UserError

Array = Any  # numpy.ndarray | torch.Tensor

T_MAX = 500.0  # largest t the search and the CLI accept


def _torch_tensor(c: Array) -> bool:
    """True for a torch tensor (without importing torch: a tensor implies torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(c, torch.Tensor)


def _xp(c: Array):
    return sys.modules["torch"] if _torch_tensor(c) else np


def _identity(c: Array) -> Array:
    return c * 1.0


def _log(c: Array) -> Array:
    xp = _xp(c)
    if xp is np:
        with np.errstate(divide="ignore"):
            return np.log(c)
    return xp.log(c)


def _exp(c: Array, t: float) -> Array:
    # (e^{tc} - 1)/(e^t - 1) = e^{-t(1-c)} (1 - e^{-tc}) / (1 - e^{-t})
    xp = _xp(c)
    return xp.exp(-t * (1.0 - c)) * (-xp.expm1(-t * c)) / (-math.expm1(-t))


def _neg_exp(c: Array, t: float) -> Array:
    # (1 - e^{-tc}) / (1 - e^{-t}), an affine image of -e^{-tc}
    xp = _xp(c)
    return xp.expm1(-t * c) / math.expm1(-t)


def _neg_exp_centered(c: Array, t: float) -> Array:
    # neg_exp(c) - 1 = -e^{-tc} (1 - e^{-t(1-c)}) / (1 - e^{-t}): keeps relative precision where
    # neg_exp is within 1e-16 of 1 (large t), which a tilt with tiny beta still resolves
    xp = _xp(c)
    return -xp.exp(-t * c) * xp.expm1(-t * (1.0 - c)) / math.expm1(-t)


def _power(c: Array, k: float) -> Array:
    return c**k


@dataclass(frozen=True)
class Transform:
    """A named :math:`\\Phi` with its parameters; call it on calibrated rewards."""

    name: str
    fn: Callable[..., Array] = field(repr=False)
    params: dict[str, float] = field(default_factory=dict)
    centered_fn: Callable[..., Array] | None = field(default=None, repr=False)

    def __call__(self, c: Array) -> Array:
        return self.fn(c, **self.params)

    def centered(self, c: Array) -> Array:
        r""":math:`\Phi(c) - \Phi(1)`, computed without cancellation where it matters; tilts
        only see :math:`\Phi` up to a constant, so this is what the exact calculus uses."""
        if self.centered_fn is not None:
            return self.centered_fn(c, **self.params)
        one = self.fn(np.ones(1), **self.params)[0]
        return self(c) - one

    @property
    def t(self) -> float | None:
        return self.params.get("t")

    @property
    def k(self) -> float | None:
        return self.params.get("k")

    def describe(self) -> str:
        inner = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}({inner})" if inner else self.name


# name -> (function, required parameter names)
TRANSFORMS: dict[str, tuple[Callable[..., Array], tuple[str, ...]]] = {
    "identity": (_identity, ()),
    "log": (_log, ()),
    "exp": (_exp, ("t",)),
    "neg_exp": (_neg_exp, ("t",)),
    "power": (_power, ("k",)),
}

ALL_TRANSFORMS: tuple[str, ...] = (*TRANSFORMS, "optimal")


def check_transform_name(name: str) -> str:
    if name not in ALL_TRANSFORMS:
        close = difflib.get_close_matches(name, ALL_TRANSFORMS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown transform '{name}'{hint}; choose from {', '.join(ALL_TRANSFORMS)}")
    return name


def get_transform(name: str, **params: float | None) -> Transform:
    """The transform ``name`` with its parameters (``t`` for exp/neg_exp, ``k`` for power).

    ``optimal`` depends on the procedure, N and KL: build it with
    :func:`mmalign.align.analytic.optimal_transform` instead.
    """
    check_transform_name(name)
    if name == "optimal":
        raise UserError("transform 'optimal' depends on procedure, n and kl; use optimal_transform(...)")
    fn, needed = TRANSFORMS[name]
    given = {k: v for k, v in params.items() if v is not None}
    for key in given:
        if key not in needed:
            raise UserError(f"transform '{name}' takes no parameter {key}"
                            + (f" (it takes {', '.join(needed)})" if needed else ""))
    for key in needed:
        if key not in given:
            raise UserError(f"transform '{name}' needs parameter {key}")
        value = float(given[key])  # type: ignore[arg-type]
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"transform '{name}': {key} must be a positive number, got {given[key]}")
        if key == "t" and value > T_MAX:
            raise UserError(f"transform '{name}': t must be at most {T_MAX:g}, got {value:g}")
        given[key] = value
    centered = _neg_exp_centered if name == "neg_exp" else None
    return Transform(name, fn, {k: float(v) for k, v in given.items()}, centered)  # type: ignore[arg-type]


def tabulated(name: str, c_grid: np.ndarray, values: np.ndarray, **params: float) -> Transform:
    r"""A transform given by values on an increasing grid of c, linearly interpolated
    (constant beyond the ends); used for the numerically optimal :math:`\Phi^*`."""
    cg = np.array(c_grid, dtype=np.float64)  # own writable copies
    vg = np.array(values, dtype=np.float64)

    def fn(c: Array, **_: float) -> Array:
        if _torch_tensor(c):
            import torch

            xs = torch.as_tensor(cg, device=c.device, dtype=torch.float64)
            ys = torch.as_tensor(vg, device=c.device, dtype=torch.float64)
            cc = c.to(torch.float64).clamp(float(cg[0]), float(cg[-1]))
            i = torch.searchsorted(xs, cc.contiguous(), right=True).clamp(1, len(cg) - 1)
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            w = ((cc - x0) / (x1 - x0).clamp_min(1e-300)).clamp(0, 1)
            return (y0 + w * (y1 - y0)).to(c.dtype)
        return np.interp(c, cg, vg)

    return Transform(name, fn, dict(params))
