"""``mmalign games run|sweep CONFIG [key=value ...]``: learning between transparent agents."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_common_flags, add_run_flags

    parser = sub.add_parser("games", help="opponent-aware learning in 2x2 games between transparent agents")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser), required=True)
    run = actions.add_parser("run", help="train many seeds; write outcome statistics, curves and plots")
    add_run_flags(run)
    add_common_flags(run)
    run.set_defaults(func=_run)
    sweep = actions.add_parser("sweep", help="run every combination of sweep.grid; write one table")
    sweep.add_argument("config", help="YAML config file")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    sweep.add_argument("--overwrite", action="store_true", help="replace an existing sweep directory")
    add_common_flags(sweep)
    sweep.set_defaults(func=_sweep)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.games import SUMMARY_KEYS, run_games

    cfg = load_recipe_config(args.config, args.overrides, expect="games")
    res = run_games(cfg, overwrite=args.overwrite, resume=args.resume)
    s = res["stats"]
    print(f"{res['game']['name']} · {cfg.learner.name} · {cfg.policy.kind} ε={cfg.policy.epsilon} "
          f"({cfg.policy.semantics}{', learnable e' if cfg.policy.learn_e else ''}) · "
          f"{cfg.train.seeds} seeds × {cfg.train.steps} steps in {res['seconds']:.1f}s")
    print("  " + "  ".join(f"{k}={s[k]:.3f}" for k in SUMMARY_KEYS))
    print(f"  results: {res['run_dir']}/results.json")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.games import run_sweep

    load_recipe_config(args.config, args.overrides, expect="games")  # right recipe, valid base
    table = run_sweep(args.config, args.overrides, overwrite=args.overwrite)
    print(f"{len(table['rows'])} grid points; table: {table['run_dir']}/sweep.md")
    return 0
