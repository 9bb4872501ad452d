"""``mmalign sft CONFIG [key=value ...]``: supervised fine-tuning (loss on response tokens)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_recipe_verb

    add_recipe_verb(sub, "sft", "supervised fine-tuning on prompt/response data", _run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.sft import run_sft

    cfg = load_recipe_config(args.config, args.overrides, expect="sft")
    res = run_sft(cfg, overwrite=args.overwrite, resume=args.resume)
    print(f"sft: {res.steps} steps in {res.seconds:.1f}s; held-out loss {res.eval_loss_start:.4f} -> "
          f"{res.eval_loss:.4f}")
    print(f"  checkpoint: {res.final_dir}")
    return 0
