"""``mmalign align CONFIG [key=value ...]``: CTRL (calibrate, transform, KL-regularised RL) and baselines."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_recipe_verb

    add_recipe_verb(sub, "align", "align a policy with CTRL (or a baseline) by KL-regularised RL", _run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.recipes.align import run_align

    cfg = load_recipe_config(args.config, args.overrides, expect="align")
    res = run_align(cfg, overwrite=args.overwrite, resume=args.resume)
    if res["metrics"]:
        print(f"{cfg.run.name}: {res['steps']} steps ({res['transform']}, beta={res['beta']:.4g})"
              + (f", resumed after step {res['resumed_from']}" if res["resumed_from"] else ""))
        print("  first -> last tenth of the steps (mean ± s.e.):")
        for key, value in res["tenths"].items():
            first, first_se, last, last_se = value
            print(f"    {key:>18}: {first:.4g} ± {first_se:.2g} -> {last:.4g} ± {last_se:.2g}")
    print(f"  run: {res['run_dir']}")
    if res["metrics"]:
        print(f"  plots: {Path(res['run_dir']) / 'plots' / 'training.png'}")
    return 0
