"""``mmalign sft CONFIG [key=value ...]``: supervised fine-tuning (loss on response tokens)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_common_flags, add_run_flags

    parser = sub.add_parser("sft", help="supervised fine-tuning on prompt/response data")
    add_run_flags(parser)
    add_common_flags(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.sft import run_sft

    cfg = load_recipe_config(args.config, args.overrides, expect="sft")
    res = run_sft(cfg, overwrite=args.overwrite, resume=args.resume)
    print(f"sft: {res.steps} steps in {res.seconds:.1f}s; held-out loss {res.eval_loss_start:.4f} -> "
          f"{res.eval_loss:.4f}")
    print(f"  checkpoint: {res.final_dir}")
    return 0
