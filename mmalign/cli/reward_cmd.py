"""``mmalign reward CONFIG [key=value ...]``: train a Bradley-Terry reward model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_common_flags, add_run_flags

    parser = sub.add_parser("reward", help="train a Bradley-Terry reward model on preference pairs")
    add_run_flags(parser)
    add_common_flags(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.reward import run

    cfg = load_recipe_config(args.config, args.overrides, expect="reward")
    result = run(cfg, overwrite=args.overwrite, resume=args.resume)
    print(f"{result.final_dir}\theld-out accuracy {result.eval_accuracy:.4f}\t{result.steps} steps\t{result.seconds:.1f}s")
    return 0
