"""``mmalign evaluate ACTION ...``: evaluation verbs.

Actions live in :data:`ACTIONS` (name -> function adding the action's parser); add one there.

``mmalign evaluate mmlu [CONFIG] [key=value ...] [--model DIR --data PATH --shots 5 ...]``: flags
override the config (or the defaults when no config is given).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def _mmlu_overrides(args: argparse.Namespace) -> list[str]:
    flags = {"model": args.model, "compare": args.compare, "data": args.data, "shots": args.shots,
             "limit": args.limit, "batch_size": args.batch_size, "mode": args.mode, "split": args.split,
             "out": args.out, "cot.k": args.k, "cot.tau": args.tau, "run.device": args.device, "run.dtype": args.dtype}
    out = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    if args.subjects is not None:
        out.append(f"subjects={json.dumps([s.strip() for s in args.subjects.split(',') if s.strip()])}")
    if args.no_prefix_cache:
        out.append("prefix_cache=false")
    return out


def _run_mmlu(args: argparse.Namespace) -> int:
    from mmalign.cli.common import load_recipe_config
    from mmalign.config import load_config
    from mmalign.config.schemas.mmlu import MMLUEvalConfig
    from mmalign.evaluation.mmlu.report import markdown, to_json
    from mmalign.evaluation.mmlu.run import run_mmlu
    from mmalign.utils.progress import is_quiet, set_quiet

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).is_file():
        config, overrides = None, [config, *overrides]
    overrides += _mmlu_overrides(args)
    if config is not None:
        cfg = load_recipe_config(config, overrides, expect="evaluate_mmlu")
    else:
        cfg = load_config(None, MMLUEvalConfig, overrides)
    quiet = is_quiet()
    if args.json:
        set_quiet(True)
    try:
        result = run_mmlu(cfg)
    finally:
        set_quiet(quiet)
    print(to_json(result) if args.json else markdown(result), end="")
    return 0


def _add_mmlu(actions: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_common_flags

    p = actions.add_parser("mmlu", help="MMLU-style multiple-choice accuracy (lm-eval compatible)",
                           description="Evaluate a model on MMLU-format data: k-shot log-likelihood exactly as "
                                       "lm-evaluation-harness, CoT@k, or uncertainty-routed CoT@k.")
    p.add_argument("config", nargs="?", help="YAML config (recipe: evaluate_mmlu); optional")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--model", help="checkpoint directory (or .onnx / .gguf)")
    p.add_argument("--compare", metavar="MODEL", help="a second model: report the difference (alignment tax)")
    p.add_argument("--data", help="MMLU CSV tree, JSONL file/dir, or HF dataset (dir or hub name)")
    p.add_argument("--shots", type=int, help="few-shot examples from the dev split (default 5)")
    p.add_argument("--subjects", help="comma-separated subjects (default: all)")
    p.add_argument("--split", choices=("dev", "val", "test"), help="split to evaluate (default test)")
    p.add_argument("--limit", type=int, help="at most this many questions per subject")
    p.add_argument("--batch-size", type=int, help="rows per forward pass (default 16)")
    p.add_argument("--mode", choices=("loglik", "cot", "ur-cot"), help="scoring mode (default loglik)")
    p.add_argument("--k", type=int, help="CoT samples per question (cot, ur-cot)")
    p.add_argument("--tau", type=float, help="ur-cot threshold (default: tuned on the val split)")
    p.add_argument("--device", help="auto, cpu, cuda, mps")
    p.add_argument("--dtype", help="auto, float32, bfloat16, float16")
    p.add_argument("--no-prefix-cache", action="store_true", help="do not reuse the few-shot prefix's KV cache")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out", help="directory for results.json, report.md, predictions.jsonl")
    add_common_flags(p)
    p.set_defaults(func=_run_mmlu)


def _add_winrate(actions: argparse._SubParsersAction) -> None:
    from mmalign.cli.evaluate_winrate_cmd import add_winrate

    add_winrate(actions)


ACTIONS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "mmlu": _add_mmlu,
    "winrate": _add_winrate,
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="evaluate models: inference-time win rates, MMLU")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser), required=True)
    for add in ACTIONS.values():
        add(actions)
