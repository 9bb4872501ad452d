"""``mmalign distill CONFIG [key=value ...]``: a student learns the teacher's token distributions."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_recipe_verb

    add_recipe_verb(sub, "distill", "distil a teacher into a student (forward KL on logits)", _run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.distill import run_distill

    cfg = load_recipe_config(args.config, args.overrides, expect="distill")
    res = run_distill(cfg, overwrite=args.overwrite, resume=args.resume)
    print(f"distill: {res.steps} steps in {res.seconds:.1f}s; held-out KL(teacher||student) "
          f"{res.eval_kl_start:.4f} -> {res.eval_kl:.4f}")
    print(f"  checkpoint: {res.final_dir}")
    return 0
