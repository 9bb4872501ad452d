"""Plots people would rather look at than read: win rate against KL with the analytic frontier
behind the measured points, and reward distributions of policy vs reference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmalign.align.procedures import Procedure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frontier_curves(procedure: str, n: int, transforms: Sequence[str], kl_max: float, points: int) -> dict:
    """Analytic (KL, win rate) curves for each transform at its best t (``mmalign frontier``),
    up to ``kl_max`` or the calculus's own limit, whichever is smaller (a policy measured far past
    it is still plotted, beyond the curves' end)."""
    from mmalign.align import frontier
    from mmalign.align.analytic import KL_MAX

    kl_max = min(kl_max, KL_MAX)
    kls = list(np.geomspace(min(0.01, kl_max / 10), kl_max, points))
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name in transforms:
        records = frontier(procedure, n, kls, [name])
        curves[name] = ([r.kl for r in records], [r.win_rate for r in records])
    return curves


def plot_winrate_vs_kl(path: str | Path, procedure: str, n: int, points: Sequence[dict],
                       curves: dict | None = None, title: str | None = None) -> Path:
    """Measured points (dicts with label, kl, kl_se, win_rate, ci_low, ci_high) over analytic curves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    for name, (kl, wr) in (curves or {}).items():
        ax.plot(kl, wr, lw=1.5, alpha=0.6, label=f"analytic: {name}", ls="--" if name != "optimal" else "-")
    markers = "osD^v<>Ph*X"
    labels = sorted({p["label"] for p in points})
    for i, label in enumerate(labels):
        pts = [p for p in points if p["label"] == label]
        x = np.array([p["kl"] for p in pts])
        y = np.array([p["win_rate"] for p in pts])
        yerr = np.array([[p["win_rate"] - p["ci_low"] for p in pts], [p["ci_high"] - p["win_rate"] for p in pts]])
        xerr = np.array([p.get("kl_se") or 0.0 for p in pts])
        ax.errorbar(x, y, yerr=yerr, xerr=xerr, fmt=markers[i % len(markers)], capsize=3, label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("KL(π ‖ π_ref)  [nats]")
    proc_label = Procedure(procedure, n).label
    ax.set_ylabel(f"{proc_label} win rate vs reference")
    ax.set_title(title or f"{proc_label}: win rate against KL")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reward_distributions(path: str | Path, policy_rewards: np.ndarray, reference_rewards: np.ndarray,
                              *, xlabel: str = "reward") -> Path:
    """Histograms of policy and reference rewards on the same prompts."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    lo = float(min(policy_rewards.min(), reference_rewards.min()))
    hi = float(max(policy_rewards.max(), reference_rewards.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 30)
    ax.hist(reference_rewards, bins=bins, alpha=0.55, label="reference", density=True)
    ax.hist(policy_rewards, bins=bins, alpha=0.55, label="policy", density=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_curves(path: str | Path, rows: Sequence[dict], keys: Sequence[str], title: str = "") -> Path:
    """One panel per metric in ``keys`` (those present in ``rows``) against ``step``."""
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
    plt = _pyplot()
    fig, axes = plt.subplots(len(keys), 1, figsize=(6.4, 1.9 * len(keys) + 0.6), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tenths(rows: Sequence[dict], key: str) -> tuple[float, float, float, float] | None:
    """Mean and standard error of ``key`` over the first and the last tenth of ``rows``
    (at least one row each): ``(first, first_se, last, last_se)``."""
    values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    if len(values) < 2:
        return None
    k = max(1, len(values) // 10)

    def mean_se(xs: list[float]) -> tuple[float, float]:
        a = np.asarray(xs)
        return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0

    return (*mean_se(values[:k]), *mean_se(values[-k:]))
