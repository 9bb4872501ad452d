"""``mmalign align CONFIG [key=value ...]``: CTRL (calibrate, transform, KL-regularised RL) and baselines."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_recipe_verb

    add_recipe_verb(sub, "align", "align a policy with CTRL (or a baseline) by KL-regularised RL", _run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.align import run_align

    cfg = load_recipe_config(args.config, args.overrides, expect="align")
    res = run_align(cfg, overwrite=args.overwrite, resume=args.resume)
    m = res["metrics"]
    if m:
        print(f"{cfg.run.name}: {res['steps']} steps ({res['transform']}, beta={res['beta']:.4g})"
              + (f", resumed after step {res['resumed_from']}" if res["resumed_from"] else ""))
        print("  " + "  ".join(f"{k}={m[k]:.4g}" for k in ("reward_raw", "reward_calibrated", "kl")
                               if isinstance(m.get(k), float)))
    print(f"  run: {res['run_dir']}")
    return 0
