"""Recipe ``games``: train transparent agents in a 2×2 game over many seeds and report outcomes.

``run_games(cfg)`` writes to ``<run.output_dir>/<run.name>/``: ``config.yaml``, ``metrics.jsonl``
(seed-averaged learning curves), ``results.json`` (outcome statistics, curves, per-seed final
outcomes), ``plots/learning_curves.png`` and ``plots/final_outcomes.png``.
``run_sweep(path, overrides)`` runs every combination of ``sweep.grid`` and writes one table
(``sweep.md``, ``sweep.csv``, ``sweep.json``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mmalign.config import load_config, to_yaml
from mmalign.config.schemas.games import GamesConfig
from mmalign.errors import ConfigError, DivergenceError
from mmalign.games import LearnerSpec, PolicySpec, get_game, outcome_stats, train
from mmalign.utils.atomic import atomic_write_text
from mmalign.utils.device import resolve_device
from mmalign.utils.progress import echo, progress
from mmalign.utils.rundir import RunDir

SUMMARY_KEYS = ("share_cc", "share_dd", "share_asymmetric", "share_mixed", "mean_p_cc", "mean_p_dd",
                "mean_value1", "mean_value2")


def _specs(cfg: GamesConfig):
    try:
        game = get_game(cfg.game.name, cfg.game.payoff1, cfg.game.payoff2)
    except ValueError as exc:
        raise ConfigError(f"game: {exc}") from None
    pc, lc = cfg.policy, cfg.learner
    policy = PolicySpec(kind=pc.kind, epsilon=pc.epsilon, learn_e=pc.learn_e, semantics=pc.semantics)
    learner = LearnerSpec(name=lc.name, lr=lc.lr, lookahead=lc.lookahead, taylor=lc.taylor,
                          sos_a=lc.sos_a, sos_b=lc.sos_b)
    return game, policy, learner


def _dtype(cfg: GamesConfig) -> torch.dtype:
    return torch.float32 if cfg.run.dtype == "float32" else torch.float64


def simulate(cfg: GamesConfig, desc: str = "games") -> tuple[dict[str, Any], Any]:
    """Train all seeds of ``cfg``; returns (statistics, TrainResult)."""
    game, policy, learner = _specs(cfg)
    bar = progress(total=cfg.train.steps, desc=desc)
    try:
        result = train(game, policy, learner, seeds=cfg.train.seeds, steps=cfg.train.steps,
                       init_std=cfg.train.init_std, seed=cfg.run.seed, log_every=cfg.train.log_every,
                       dtype=_dtype(cfg), device=resolve_device(cfg.run.device),
                       on_step=lambda _: bar.update(1))
    finally:
        bar.close()
    _check_finite(cfg, result)
    stats = outcome_stats(result.joint, result.value1, result.value2, cfg.analysis.threshold)
    return stats, result


def _check_finite(cfg: GamesConfig, result: Any) -> None:
    """Stop with one line at the first logged step whose curves hold a NaN or infinity."""
    hint = f"shrink the payoffs or lower learner.lr (now {cfg.learner.lr:g})"
    hist = result.history
    for i, step in enumerate(hist["step"]):
        for key, values in hist.items():
            if key != "step" and not math.isfinite(values[i]):
                raise DivergenceError("games", step, key, values[i], hint)
    finals = torch.cat([result.joint.flatten(), result.value1.flatten(), result.value2.flatten()])
    if not bool(torch.isfinite(finals).all()):
        raise DivergenceError("games", cfg.train.steps, "the final outcome", float("nan"), hint)


def run_games(cfg: GamesConfig, *, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train, write the run directory, and return the results dict (also saved as results.json)."""
    run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite, resume=resume)
    if run.resumed:  # runs are short: a resumed run starts again from step 0
        run.truncate_metrics(-1)
    t0 = time.time()
    stats, result = simulate(cfg, desc=cfg.run.name)
    hist = result.history
    for i, step in enumerate(hist["step"]):
        run.log_metrics(step, **{k: v[i] for k, v in hist.items() if k != "step"})
    game, _, _ = _specs(cfg)
    results: dict[str, Any] = {
        "game": {"name": game.name, "payoff1": game.payoff1, "payoff2": game.payoff2},
        "policy": asdict(cfg.policy), "learner": asdict(cfg.learner), "train": asdict(cfg.train),
        "threshold": cfg.analysis.threshold, "outcome_order": ["CC", "CD", "DC", "DD"],
        "stats": stats, "curves": hist, "seconds": round(time.time() - t0, 3),
    }
    if cfg.analysis.save_final:
        results["final_joint"] = [[round(float(v), 6) for v in row] for row in result.joint.cpu()]
    atomic_write_text(run.path / "results.json", _json_lines(results))
    if cfg.analysis.plots:
        plot_run(result, run.path / "plots", title=f"{game.name} · {cfg.learner.name} · "
                 f"{cfg.policy.kind} ε={cfg.policy.epsilon}")
    run.logger.info("stats %s", json.dumps(stats))
    run.finish()
    results["run_dir"] = str(run.path)
    return results


def plot_run(result, out_dir: Path, title: str = "") -> None:
    """Learning curves (seed means) and the final-outcome scatter of P(agent 1 plays C) vs agent 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    h = result.history
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(h["step"], h["p_cc"], label="P(CC)")
    ax1.plot(h["step"], h["p_dd"], label="P(DD)")
    ax1.plot(h["step"], [a + b for a, b in zip(h["p_cd"], h["p_dc"])], label="P(CD)+P(DC)")
    ax1.set(xlabel="step", ylabel="mean over seeds", ylim=(0, 1), title="outcome probabilities")
    ax1.legend()
    ax2.plot(h["step"], h["value1"], label="agent 1")
    ax2.plot(h["step"], h["value2"], label="agent 2")
    ax2.set(xlabel="step", ylabel="mean expected payoff", title="payoffs")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_dir / "learning_curves.png", dpi=110)
    plt.close(fig)

    joint = result.joint.detach().cpu().double()
    x1, x2 = joint[:, 0] + joint[:, 1], joint[:, 0] + joint[:, 2]
    top = joint.argmax(-1)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for k, name in enumerate(("CC", "CD", "DC", "DD")):
        sel = top == k
        if sel.any():
            ax.scatter(x1[sel], x2[sel], s=8, alpha=0.5, label=f"most likely {name}")
    ax.set(xlabel="P(agent 1 plays C)", ylabel="P(agent 2 plays C)", xlim=(-0.02, 1.02),
           ylim=(-0.02, 1.02), title="final outcome per seed")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out_dir / "final_outcomes.png", dpi=110)
    plt.close(fig)


def expand_grid(path: str | Path, overrides: Sequence[str], cfg: GamesConfig) -> list[tuple[dict[str, Any], GamesConfig]]:
    """Every combination of ``cfg.sweep.grid``, each loaded and validated like a command line."""
    keys = list(cfg.sweep.grid)
    combos = list(itertools.product(*(cfg.sweep.grid[k] for k in keys))) if keys else [()]
    out, seen = [], set()
    for combo in combos:
        point = dict(zip(keys, combo))
        extra = [f"{k}={json.dumps(v)}" for k, v in point.items()]
        sub = load_config(path, GamesConfig, [*overrides, *extra])
        if sub.policy.kind == "mixed":  # ε, e and semantics do not matter without transparency
            sub.policy.epsilon, sub.policy.learn_e, sub.policy.semantics = 1.0, False, "fresh"
        ident = json.dumps([asdict(sub.game), asdict(sub.policy), asdict(sub.learner), asdict(sub.train)])
        if ident not in seen:
            seen.add(ident)
            out.append((point, sub))
    return out


def run_sweep(path: str | Path, overrides: Sequence[str] = (), *, overwrite: bool = False) -> dict[str, Any]:
    """Run every grid point (all validated first) and write sweep.md / sweep.csv / sweep.json."""
    cfg = load_config(path, GamesConfig, overrides)
    points = expand_grid(path, overrides, cfg)
    run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite)
    keys = list(cfg.sweep.grid)
    rows = []
    for i, (point, sub) in enumerate(points):
        label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())
        t0 = time.time()
        stats, _ = simulate(sub, desc=f"[{i + 1}/{len(points)}] {label}")
        row = {**{k: _lookup(sub, k) for k in keys}, **stats, "seconds": round(time.time() - t0, 2)}
        rows.append(row)
        run.log_metrics(i, **row)
        echo(f"[{i + 1}/{len(points)}] {label}: " + " ".join(f"{k}={row[k]:.3f}" for k in SUMMARY_KEYS[:4]))
    table = {"grid": cfg.sweep.grid, "rows": rows}
    atomic_write_text(run.path / "sweep.json", json.dumps(table, indent=1) + "\n")
    atomic_write_text(run.path / "sweep.csv", _csv(rows))
    atomic_write_text(run.path / "sweep.md", markdown_table(rows, keys))
    run.finish()
    table["run_dir"] = str(run.path)
    return table


def _json_lines(obj: dict[str, Any]) -> str:
    """JSON with one top-level key per line (long per-seed lists stay on one line)."""
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items())
    return "{\n" + body + "\n}\n"


def _lookup(cfg: GamesConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def markdown_table(rows: list[dict[str, Any]], keys: Sequence[str], cols: Sequence[str] = SUMMARY_KEYS) -> str:
    """Grid keys then outcome columns, one row per grid point."""
    head = [k.split(".")[-1] for k in keys] + list(cols)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r[k]) for k in keys] + [f"{r[c]:.3f}" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
