"""``mmalign config show|check CONFIG [key=value ...]``."""

from __future__ import annotations

import argparse

from mmalign.cli.common import load_recipe_config
from mmalign.config import to_yaml


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="show or check a config file")
    from mmalign.cli.main import add_common_flags

    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser), required=True)
    show = actions.add_parser("show", help="print the resolved config (includes, overrides, defaults)")
    check = actions.add_parser("check", help="validate a config and report the first problem")
    for p in (show, check):
        p.add_argument("config", help="YAML config file")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        add_common_flags(p)
    show.set_defaults(func=_show)
    check.set_defaults(func=_check)


def _show(args: argparse.Namespace) -> int:
    cfg = load_recipe_config(args.config, args.overrides)
    print(to_yaml(cfg), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    cfg = load_recipe_config(args.config, args.overrides)
    print(f"{args.config}: ok ({cfg.recipe} config)")
    return 0
