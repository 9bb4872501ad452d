"""``mmalign evaluate winrate CONFIG [key=value ...]``: policy vs reference under inference procedures."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.config import to_yaml
    from mmalign.recipes.evaluate_winrate import run_winrate
    from mmalign.utils.progress import echo
    from mmalign.utils.rundir import RunDir

    cfg = load_recipe_config(args.config, args.overrides, expect="evaluate_winrate")
    run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=args.overwrite, resume=args.resume)
    results = run_winrate(cfg, run)
    run.finish()
    echo(f"KL(policy || reference) = {results['kl']:.4f} ± {results['kl_se']:.4f}")
    for wr in results["win_rates"]:
        echo(f"{wr['label']:>12}: win rate {wr['win_rate']:.3f}  [{wr['ci_low']:.3f}, {wr['ci_high']:.3f}]")
    echo(f"report: {run.path / 'report.md'}")
    return 0


def add_winrate(actions: argparse._SubParsersAction) -> None:
    """Add the ``winrate`` action to ``mmalign evaluate``."""
    from mmalign.cli.main import add_recipe_verb

    add_recipe_verb(actions, "winrate", "inference-time win rate of a policy against its reference", _run)
