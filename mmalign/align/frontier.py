r"""Win rate vs KL frontiers of transforms, and the recommendation for a training config.

For a procedure (standard / best-of-N / worst-of-N), each transform :math:`\Phi` traces the curve
:math:`\kappa \mapsto W(\text{tilt}(\Phi, \beta(\kappa)))` with :math:`\mathrm{KL} = \kappa`; the
optimal transform traces the upper envelope (the frontier) of all tilts.

The calculus (:mod:`mmalign.align.analytic`, scipy) is imported when a frontier is computed, so
``mmalign.align`` itself loads without scipy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from mmalign.align.procedures import get_procedure
from mmalign.align.transforms import check_transform_name, get_transform
from mmalign.errors import UserError


@dataclass(frozen=True)
class FrontierPoint:
    """One transform at one KL: the record ``mmalign frontier --json`` prints."""

    procedure: str
    n: int
    transform: str
    t: float | None
    beta: float
    kl: float
    win_rate: float

    def as_dict(self) -> dict:
        return asdict(self)


def check_transform_params(transforms: Sequence[str], t: float | None, k: float | None) -> None:
    """``t`` only with exp/neg_exp, ``k`` only (and always) with power."""
    for name in transforms:
        check_transform_name(name)
    if t is not None and not {"exp", "neg_exp"} & set(transforms):
        raise UserError(f"t applies only to exp and neg_exp, not to {', '.join(transforms)}")
    if k is not None and "power" not in transforms:
        raise UserError(f"k applies only to power, not to {', '.join(transforms)}")
    if "power" in transforms and k is None:
        raise UserError("transform 'power' needs k")


def point(procedure: str, n: int, transform: str, kl: float, *, t: float | None = None,
          k: float | None = None) -> FrontierPoint:
    """Evaluate one transform at KL = ``kl`` (searching the best t of exp/neg_exp when t is None)."""
    from mmalign.align.analytic import best_t, check_kl, evaluate, make_grid, optimal_policy

    proc = get_procedure(procedure, n)
    kl = check_kl(kl)
    grid = make_grid()
    if transform == "optimal":
        opt = optimal_policy(proc.name, proc.n, kl, grid)
        return FrontierPoint(proc.name, proc.n, "optimal", None, opt.beta, kl, opt.win_rate)
    if transform in ("exp", "neg_exp") and t is None:
        tuned = best_t(proc.name, proc.n, kl, family=transform, grid=grid)
    else:
        params = {"t": t} if transform in ("exp", "neg_exp") else {"k": k} if transform == "power" else {}
        tuned = evaluate(get_transform(transform, **params), proc, kl, grid)
    return FrontierPoint(proc.name, proc.n, transform, tuned.transform.t, tuned.beta, kl, tuned.win_rate)


def frontier(procedure: str, n: int, kls: Iterable[float], transforms: Sequence[str], *,
             t: float | None = None, k: float | None = None, progress=None) -> list[FrontierPoint]:
    """Records for every (transform, KL) pair, transforms in the given order, KLs ascending.

    ``progress``: optional tqdm-like factory (``progress(total=, desc=)``) for a bar.
    """
    from mmalign.align.analytic import check_kl

    get_procedure(procedure, n)
    check_transform_params(transforms, t, k)
    kl_list = sorted({check_kl(x) for x in kls})
    if not kl_list:
        raise UserError("no kl values given")
    pairs = [(name, kl) for name in transforms for kl in kl_list]
    bar = progress(total=len(pairs), desc="frontier") if progress is not None else None
    records = []
    try:
        for name, kl in pairs:
            records.append(point(procedure, n, name, kl, t=t, k=k))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return records


@dataclass(frozen=True)
class Recommendation:
    """What to put in a training config: transform, t and :math:`\\beta` at the target KL."""

    procedure: str
    n: int
    kl: float
    transform: str
    t: float | None
    beta: float
    win_rate: float
    optimal_win_rate: float

    def as_dict(self) -> dict:
        return asdict(self)


def recommend(procedure: str, n: int, kl: float) -> Recommendation:
    """The closed-form transform for the procedure (identity for standard, exp at its best t for
    best-of-N, neg_exp at its best t for worst-of-N) with its :math:`\\beta`, next to the optimum."""
    from mmalign.align.analytic import check_kl, default_family

    proc = get_procedure(procedure, n)
    kl = check_kl(kl)
    family = "identity" if proc.name == "standard" or proc.n == 1 else default_family(proc.name)
    chosen = point(proc.name, proc.n, family, kl)
    optimum = point(proc.name, proc.n, "optimal", kl)
    return Recommendation(proc.name, proc.n, kl, chosen.transform, chosen.t, chosen.beta,
                          chosen.win_rate, max(optimum.win_rate, chosen.win_rate))
