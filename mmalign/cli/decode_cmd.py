"""``mmalign decode CONFIG [key=value ...]``: sample, best-of-N, worst-of-N or blockwise decoding."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_recipe_verb

    add_recipe_verb(sub, "decode", "decode prompts (sample / best-of-N / worst-of-N / blockwise)", _run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.decode import run_decode

    cfg = load_recipe_config(args.config, args.overrides, expect="decode")
    res = run_decode(cfg, overwrite=args.overwrite, resume=args.resume)
    mean = f"; mean chosen reward {res.mean_reward:.4f}" if res.mean_reward is not None else ""
    print(f"decode ({cfg.decode.method}, n={cfg.decode.n}): {res.prompts} prompts in {res.seconds:.1f}s{mean}")
    print(f"  outputs: {res.outputs}")
    return 0
