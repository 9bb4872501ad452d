"""``mmalign reward CONFIG [key=value ...]``: train a Bradley-Terry reward model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_recipe_verb

    add_recipe_verb(sub, "reward", "train a Bradley-Terry reward model on preference pairs", _run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.reward import run

    cfg = load_recipe_config(args.config, args.overrides, expect="reward")
    result = run(cfg, overwrite=args.overwrite, resume=args.resume)
    print(f"{result.final_dir}\theld-out accuracy {result.eval_accuracy:.4f}\t{result.steps} steps\t{result.seconds:.1f}s")
    return 0
