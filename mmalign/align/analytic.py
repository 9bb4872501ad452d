r"""Exact calculus of tilted policies on the calibrated-reward scale.

Under the reference policy the calibrated reward c is uniform on [0, 1]. The tilt by
:math:`\Phi` with coefficient :math:`\beta` has density and KL

.. math::  g(c) = \frac{e^{\Phi(c)/\beta}}{Z},\qquad Z = \int_0^1 e^{\Phi(c)/\beta}\,dc,\qquad
           \mathrm{KL}(\pi\|\pi_{ref}) = \int_0^1 g\log g = \frac{E_g[\Phi]}{\beta} - \log Z,

and the win rates of :mod:`mmalign.align.procedures` follow from its CDF :math:`G`.

**Discretisation.** [0, 1] is cut into M cells whose edges are :math:`\sigma(s)` (logistic) at
evenly spaced s in [-S, S], so cells shrink geometrically towards 0 and 1 (down to
:math:`e^{-S}`), where sharp tilts put their mass. Cell j has reference mass :math:`q_j` and
calibrated reward :math:`c_j` = its midpoint, which is *exactly* the calibrated reward of the cell
under the discrete reference (mass below plus half its own). The policy has masses
:math:`p_j \propto q_j\,e^{\Phi(c_j)/\beta}` (computed in log space with logsumexp, so no
overflow for t up to 500 or :math:`\beta` down to 1e-4). KL and win rates are then exact for
the discrete pair of distributions (ties within a cell count half), and equal the continuous
integrals up to the midpoint rule's :math:`O(q^2)` error (below 1e-6 at the default M). Because
every transform *and* the optimiser use the same discrete problem, the optimum dominates every
transform exactly, not just up to quadrature error.

**Optimal transform.** Maximising :math:`W(g)` subject to :math:`\mathrm{KL}(g) = \kappa` gives the
stationarity condition :math:`g \propto \exp(r_g/\beta)` where :math:`r_g = \delta W/\delta g` is the
procedure's reward (:meth:`Procedure.reward`): the optimal policy is itself a tilt, with
:math:`\Phi^* = r_{g^*}`. We solve this fixed point by damped iteration: given :math:`\Phi_k`,
choose :math:`\beta_k` with :math:`\mathrm{KL} = \kappa`, tilt, compute :math:`r` and set
:math:`\Phi_{k+1} = (1-\alpha)\Phi_k + \alpha\,\bar r` (:math:`\bar r` = r mapped affinely onto
[-1, 0]; the offset is irrelevant to a tilt), halving :math:`\alpha` whenever the residual :math:`\|\bar r - \Phi_k\|_\infty` grows.
The iteration starts from the best of identity and exp/neg_exp at its best t, and we keep the
best iterate, so the result is never worse than those transforms.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.special import expit, logsumexp

from mmalign.align.procedures import Procedure, get_procedure
from mmalign.align.transforms import T_MAX, Transform, get_transform, tabulated
from mmalign.errors import UserError

DEFAULT_CELLS = 8192
DEFAULT_SPAN = 36.0
KL_MIN, KL_MAX = 1e-4, 20.0
BETA_MIN, BETA_MAX = 1e-300, 1e12
T_MIN = 1e-3
TIE_TOL = 1e-7  # win rates this close count as equal when picking t


# ------------------------------------------------------------------------------------------
# grid
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Cells of [0, 1]: reference CDF at the M+1 edges, masses q_j, midpoints c_j."""

    edges: np.ndarray
    mass: np.ndarray
    c: np.ndarray

    @property
    def log_mass(self) -> np.ndarray:
        return np.log(self.mass)

    @property
    def cells(self) -> int:
        return len(self.mass)


@functools.lru_cache(maxsize=8)
def make_grid(cells: int = DEFAULT_CELLS, span: float = DEFAULT_SPAN) -> Grid:
    """M = ``cells`` cells with logistic edges :math:`\\sigma(s)`, s evenly spaced in [-span, span]."""
    s = np.linspace(-span, span, cells - 1)
    edges = np.concatenate([[0.0], expit(s), [1.0]])
    a, b = s[:-1], s[1:]
    # sigma(b) - sigma(a) = sigma(b) sigma(-a) (1 - e^{a-b}), without cancellation at the ends
    inner = expit(b) * expit(-a) * -np.expm1(a - b)
    mass = np.concatenate([[expit(s[0])], inner, [expit(-s[-1])]])
    mass = mass / mass.sum()
    c = 0.5 * (edges[:-1] + edges[1:])
    for arr in (edges, mass, c):
        arr.setflags(write=False)
    return Grid(edges, mass, c)


# ------------------------------------------------------------------------------------------
# tilts
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tilt:
    """The discrete tilted policy :math:`p_j \\propto q_j e^{\\Phi(c_j)/\\beta}` and its KL."""

    phi: np.ndarray
    beta: float
    log_p: np.ndarray
    kl: float
    grid: Grid

    @property
    def p(self) -> np.ndarray:
        return np.exp(self.log_p)

    @property
    def cdf(self) -> np.ndarray:
        """Policy CDF at the cell edges (0 first, 1 last)."""
        f = np.concatenate([[0.0], np.cumsum(self.p)])
        f = np.clip(f / f[-1], 0.0, 1.0)
        return f

    def density(self) -> np.ndarray:
        """:math:`g(c_j) = p_j / q_j`."""
        return np.exp(self.log_p - self.grid.log_mass)

    def win_rate(self, procedure: Procedure) -> float:
        return procedure.win_rate(self.cdf, self.grid.edges)


def tilt(phi: np.ndarray, beta: float, grid: Grid) -> Tilt:
    """Tilt the reference by transform values ``phi`` (on ``grid.c``) at coefficient ``beta``."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        a = phi / beta
    finite = np.isfinite(a)
    logits = np.where(finite, a, -np.inf) + grid.log_mass
    log_z = logsumexp(logits)
    log_p = logits - log_z
    p = np.exp(log_p)
    kl = float(np.sum(np.where(p > 0, p * (np.where(finite, a, 0.0) - log_z), 0.0)))
    return Tilt(phi, float(beta), log_p, max(kl, 0.0), grid)


def _phi_values(transform: Transform | np.ndarray, grid: Grid) -> np.ndarray:
    if isinstance(transform, Transform):
        return np.asarray(transform.centered(grid.c), dtype=np.float64)
    return np.asarray(transform, dtype=np.float64)


def check_kl(kl: float) -> float:
    kl = float(kl)
    if not math.isfinite(kl) or kl <= 0:
        raise UserError(f"kl must be a positive number, got {kl:g}")
    if kl < KL_MIN or kl > KL_MAX:
        raise UserError(f"kl must be between {KL_MIN:g} and {KL_MAX:g}, got {kl:g}")
    return kl


def beta_for_kl(transform: Transform | np.ndarray, kl: float, grid: Grid | None = None) -> float:
    r"""The :math:`\beta` at which the tilt by ``transform`` has KL = ``kl``.

    :math:`\mathrm{KL}(\beta)` decreases monotonically from its maximum (:math:`\beta \to 0`,
    all mass on the top cell) to 0 (:math:`\beta \to \infty`), so we bracket and solve
    :math:`\log \mathrm{KL}(e^x) = \log \kappa` by Brent's method in :math:`x = \log\beta`.
    """
    kl = check_kl(kl)
    grid = grid or make_grid()
    phi = _phi_values(transform, grid)
    target = math.log(kl)

    def f(x: float) -> float:
        return math.log(max(tilt(phi, math.exp(x), grid).kl, 1e-300)) - target

    lo, hi = math.log(BETA_MIN), math.log(BETA_MAX)
    x = 0.0
    fx = f(x)
    step = 2.0
    if fx > 0:  # KL too big: raise beta
        while fx > 0:
            x_new = x + step
            if x_new > hi:
                raise UserError(f"kl {kl:g} is too small to reach with this transform")
            x, fx = x_new, f(x_new)
            step *= 1.5
        a, b = x - step / 1.5, x
    else:  # KL too small: lower beta
        while fx < 0:
            x_new = x - step
            if x_new < lo:
                name = transform.describe() if isinstance(transform, Transform) else "this transform"
                raise UserError(f"kl {kl:g} is out of reach for {name} "
                                f"(at most {tilt(phi, BETA_MIN, grid).kl:.3g})")
            x, fx = x_new, f(x_new)
            step *= 1.5
        a, b = x, x + step / 1.5
    return math.exp(brentq(f, a, b, xtol=1e-12, rtol=1e-12))


def beta_for_raw_reward(spread: float, kl: float, grid: Grid | None = None) -> float:
    r"""An initial :math:`\beta` for KL-regularised RL on an uncalibrated reward at KL budget ``kl``.

    ``spread``: the raw reward's standard deviation under the reference, averaged over prompts.
    If the raw reward were :math:`r = a(x) + s\,c(x, y)`, one scale :math:`s` on every prompt, its
    tilt at :math:`\beta = s\,\beta_c` (:math:`\beta_c` the identity tilt's at ``kl``) would be
    the identity tilt exactly; :math:`s = \sqrt{12}\cdot` spread, since a calibrated reward's
    standard deviation is :math:`1/\sqrt{12}`. Real rewards are not that, so this is where the KL
    controller starts, not where it ends.
    """
    if not math.isfinite(spread) or spread <= 0:
        raise UserError(f"the raw reward does not vary under the reference (spread {spread:g}): "
                        "no beta can be scaled to it; set kl.beta")
    return math.sqrt(12.0) * spread * beta_for_kl(get_transform("identity"), kl, grid)


def policy_at_kl(transform: Transform | np.ndarray, kl: float, grid: Grid | None = None) -> Tilt:
    """The tilt by ``transform`` whose KL is ``kl``."""
    grid = grid or make_grid()
    phi = _phi_values(transform, grid)
    return tilt(phi, beta_for_kl(transform, kl, grid), grid)


def kl_divergence(transform: Transform, beta: float, grid: Grid | None = None) -> float:
    r""":math:`\mathrm{KL}(\pi\|\pi_{ref}) = \int_0^1 g \log g` of the tilt at ``beta``."""
    grid = grid or make_grid()
    return tilt(_phi_values(transform, grid), beta, grid).kl


def win_rate(transform: Transform, beta: float, procedure: str | Procedure = "standard",
             n: int = 1, grid: Grid | None = None) -> float:
    """Inference-time win rate of the tilt by ``transform`` at ``beta`` against the reference."""
    grid = grid or make_grid()
    proc = procedure if isinstance(procedure, Procedure) else get_procedure(procedure, n)
    return tilt(_phi_values(transform, grid), beta, grid).win_rate(proc)


@dataclass(frozen=True)
class BestOfNOptimum:
    r"""The optimum of :math:`\Phi(c) = \log c` at :math:`\beta = 1/(N-1)`: the reference's own
    best-of-N distribution, density :math:`N c^{N-1}` (also BOND's and vBoN's fixed point).

    .. math:: \mathrm{KL} = \log N - \frac{N-1}{N}, \qquad W_{standard} = \frac{N}{N+1}

    Both are model-free: a trainer that reaches the optimum lands there on any task whose
    calibrated reward is continuous.
    """

    n: int
    beta: float
    kl: float
    win_rate: float


def best_of_n_optimum(n: int) -> BestOfNOptimum:
    """The closed-form target of CTRL-log at :math:`\beta = 1/(N-1)` (``n >= 2``)."""
    if n < 2:
        raise UserError(f"best-of-N needs n >= 2, got {n}")
    return BestOfNOptimum(n, 1.0 / (n - 1), math.log(n) - (n - 1) / n, n / (n + 1))


# ------------------------------------------------------------------------------------------
# best t
# ------------------------------------------------------------------------------------------


def default_family(procedure: str) -> str:
    """``exp`` for best-of-N (and standard), ``neg_exp`` for worst-of-N."""
    return "neg_exp" if procedure == "won" else "exp"


@dataclass(frozen=True)
class TunedTransform:
    """A transform at a target KL: its :math:`\\beta` and the resulting win rate."""

    transform: Transform
    beta: float
    kl: float
    win_rate: float
    procedure: Procedure


def evaluate(transform: Transform, procedure: Procedure, kl: float, grid: Grid | None = None) -> TunedTransform:
    """Win rate of ``transform`` under ``procedure`` at KL = ``kl`` (solving for :math:`\\beta`)."""
    grid = grid or make_grid()
    beta = beta_for_kl(transform, kl, grid)
    pol = tilt(_phi_values(transform, grid), beta, grid)
    return TunedTransform(transform, beta, pol.kl, pol.win_rate(procedure), procedure)


def best_t(procedure: str, n: int, kl: float, family: str | None = None,
           grid: Grid | None = None) -> TunedTransform:
    r"""The t in [1e-3, 500] maximising the win rate of ``family`` (exp for BoN, neg_exp for WoN)
    at KL = ``kl``: a log-spaced scan, then bounded Brent refinement in :math:`\log t`. Among t
    whose win rates tie within 1e-7 (saturation), the one with the largest :math:`\beta`."""
    proc = get_procedure(procedure, n)
    kl = check_kl(kl)
    family = family or default_family(proc.name)
    if family not in ("exp", "neg_exp"):
        raise UserError(f"best_t searches t of exp or neg_exp, not '{family}'")
    if grid is None or grid is make_grid():
        return _best_t_default(proc.name, proc.n, kl, family)
    return _search_t(proc, kl, family, grid)


@functools.lru_cache(maxsize=256)
def _best_t_default(procedure: str, n: int, kl: float, family: str) -> TunedTransform:
    return _search_t(get_procedure(procedure, n), kl, family, make_grid())


def _at_log_t(family: str, log_t: float, proc: Procedure, kl: float, grid: Grid | None = None) -> TunedTransform | None:
    """``family`` at t = exp(log_t) tuned to ``kl``; None where that KL is out of its reach (a large
    t can make it so: neg_exp can only cut mass near c = 0)."""
    try:
        return evaluate(get_transform(family, t=math.exp(log_t)), proc, kl, grid)
    except UserError:
        return None


def _search_t(proc: Procedure, kl: float, family: str, grid: Grid) -> TunedTransform:

    def score(log_t: float) -> TunedTransform | None:
        return _at_log_t(family, log_t, proc, kl, grid)

    def loss(log_t: float) -> float:
        s = score(log_t)
        return 2.0 if s is None else -s.win_rate

    xs = np.linspace(math.log(T_MIN), math.log(T_MAX), 25)
    scans = [score(x) for x in xs]
    rates = [-2.0 if s is None else s.win_rate for s in scans]
    i = int(np.argmax(rates))
    best = scans[i]
    if best is None:
        raise UserError(f"kl {kl:g} is out of reach for {family} at every t in [{T_MIN:g}, {T_MAX:g}]")
    lo, hi = xs[max(i - 1, 0)], xs[min(i + 1, len(xs) - 1)]
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    found = [s for s in [*scans, score(float(res.x))] if s is not None]
    top = max(s.win_rate for s in found)
    # where the win rate saturates (worst-of-N at large KL) many t tie; take the best-conditioned
    return max((s for s in found if s.win_rate >= top - TIE_TOL), key=lambda s: s.beta)


def robust_t(procedure: str, n: int, kl: float, tolerance: float, family: str | None = None) -> TunedTransform:
    r"""The smallest t whose exact win rate at KL = ``kl`` is within ``tolerance`` of
    :func:`best_t`'s.

    The win rate is flat in t near its maximum, while :math:`\beta` is not: neg_exp's best t at
    KL 1 for worst-of-4 (t = 16) needs :math:`\beta \approx 2\times10^{-5}`, so the KL term of the
    RL objective is far below the reward's sampling noise and stochastic gradients cannot hold the
    KL (measured: KL 21 for a target of 1), while t = 5 gives up 0.002 of win rate at
    :math:`\beta \approx 0.02`. Trading at most ``tolerance`` of exact win rate for the flattest
    such transform keeps the tilt learnable."""
    best = best_t(procedure, n, kl, family)
    if tolerance <= 0:
        return best
    proc, fam = best.procedure, family or default_family(best.procedure.name)
    floor = best.win_rate - tolerance

    def score(log_t: float) -> TunedTransform | None:
        return _at_log_t(fam, log_t, proc, kl)

    lo, hi = math.log(T_MIN), math.log(best.transform.t)
    at_lo = score(lo)
    if at_lo is not None and at_lo.win_rate >= floor:
        return at_lo
    for _ in range(40):  # bisection in log t: below the optimum the win rate rises with t
        mid = 0.5 * (lo + hi)
        s = score(mid)
        if s is not None and s.win_rate >= floor:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-3:
            break
    return score(hi) or best


# ------------------------------------------------------------------------------------------
# optimal transform
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimalPolicy:
    r"""The win-rate-optimal tilt at a KL: :math:`\Phi^*` on the grid, mapped affinely onto
    [-1, 0] (so ``beta`` is on the same scale as for the [0, 1]-normalised exp/neg_exp)."""

    procedure: Procedure
    kl: float
    beta: float
    win_rate: float
    phi: np.ndarray
    residual: float
    iterations: int
    grid: Grid

    def transform(self) -> Transform:
        """:math:`\\Phi^*` (mapped onto [0, 1]) as a callable on calibrated rewards (linear
        interpolation between grid points)."""
        return tabulated("optimal", self.grid.c, self.phi + 1.0)


def _normalise(r: np.ndarray) -> np.ndarray:
    """Affine map of an increasing reward onto [-1, 0] (top at 0, exact near the top)."""
    span = r[-1] - r[0]
    return (r - r[-1]) / span if span > 0 else np.zeros_like(r)


def optimal_policy(procedure: str, n: int, kl: float, grid: Grid | None = None, *,
                   tol: float = 1e-7, max_iter: int = 500) -> OptimalPolicy:
    r"""Solve the stationarity condition :math:`\Phi^* = \overline{\delta W/\delta g}\,[g_{\Phi^*,\beta}]`
    with :math:`\mathrm{KL}(g) = \kappa` by damped fixed-point iteration (see module doc)."""
    proc = get_procedure(procedure, n)
    kl = check_kl(kl)
    grid = grid or make_grid()

    starts = [get_transform("identity")]
    if proc.name != "standard":
        starts.append(best_t(proc.name, proc.n, kl, grid=grid).transform)
    phi = max((_phi_values(s, grid) for s in starts),
              key=lambda v: policy_at_kl(v, kl, grid).win_rate(proc))

    pol = policy_at_kl(phi, kl, grid)
    best = (pol.win_rate(proc), phi, pol.beta)
    alpha, prev_res, res, it = 1.0, math.inf, math.inf, 0
    for it in range(1, max_iter + 1):  # noqa: B007
        r = _normalise(proc.reward(pol.cdf, grid.edges))
        res = float(np.max(np.abs(r - phi)))
        if res < tol:
            break
        if res > prev_res:
            alpha /= 2
        prev_res = res
        while alpha >= 1e-4:  # backtrack when the step makes the KL unreachable
            try:
                candidate = (1 - alpha) * phi + alpha * r
                pol = policy_at_kl(candidate, kl, grid)
                break
            except UserError:
                alpha /= 2
        else:
            break
        phi = candidate
        w = pol.win_rate(proc)
        if w > best[0]:
            best = (w, phi, pol.beta)
    w, phi, beta = best
    pol = tilt(phi, beta, grid)  # report the residual of the iterate we return
    res = float(np.max(np.abs(_normalise(proc.reward(pol.cdf, grid.edges)) - phi)))
    return OptimalPolicy(proc, kl, beta, w, phi, res, it, grid)


def optimal_transform(procedure: str, n: int, kl: float) -> Transform:
    """The numerically optimal :math:`\\Phi^*` for ``procedure`` with N = ``n`` at KL = ``kl``."""
    return optimal_policy(procedure, n, kl).transform()
