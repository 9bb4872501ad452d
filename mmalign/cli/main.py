"""``mmalign <verb> ...``: the entry point.

Each verb lives in its own module under ``mmalign.cli`` with a ``register(subparsers)`` function
that adds its parser and sets ``func(args) -> int``. User errors (:class:`mmalign.errors.UserError`)
become one line on stderr and exit status 2, and so do OS errors the machine causes (permission
denied, a read-only or full disk: :func:`mmalign.utils.io_errors.environment_error`), whatever
verb hit them; ``--debug`` shows the traceback instead. However a verb
ends, the run directories it opened are closed (:func:`mmalign.utils.rundir.close_open_runs`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mmalign import __version__
from mmalign.errors import UserError

# Verb modules, in the order `mmalign --help` lists them.
VERB_MODULES: tuple[str, ...] = (
    "mmalign.cli.config_cmd",
    "mmalign.cli.zoo_cmd",
    "mmalign.cli.frontier_cmd",
    "mmalign.cli.sft_cmd",
    "mmalign.cli.distill_cmd",
    "mmalign.cli.reward_cmd",
    "mmalign.cli.align_cmd",
    "mmalign.cli.decode_cmd",
    "mmalign.cli.evaluate_cmd",
    "mmalign.cli.export_cmd",
    "mmalign.cli.games_cmd",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every verb accepts (also accepted before the verb)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks for errors")
    parser.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or status lines")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """``CONFIG [key=value ...]`` plus --overwrite/--resume, for verbs that run a recipe."""
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run")


def add_recipe_verb(sub: argparse._SubParsersAction, name: str, help: str, func) -> argparse.ArgumentParser:
    """A ``mmalign NAME CONFIG [key=value ...] [--overwrite|--resume]`` verb that runs ``func(args)``."""
    parser = sub.add_parser(name, help=help)
    add_run_flags(parser)
    add_common_flags(parser)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mmalign",
        description="Inference-aware alignment (CTRL) for text and multimodal model families.",
    )
    parser.add_argument("--version", action="version", version=f"mmalign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or status lines")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    for module_name in VERB_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (also used as the console script)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may also come after flags (`mmalign sft cfg.yaml --overwrite a=1`).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = bool(getattr(args, "debug", False))
    from mmalign.utils.progress import set_quiet

    set_quiet(bool(getattr(args, "quiet", False)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.verb is None else 2
    from mmalign.utils.rundir import check_run_flags, close_open_runs

    try:
        check_run_flags(overwrite=bool(getattr(args, "overwrite", False)), resume=bool(getattr(args, "resume", False)))
        return int(args.func(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"mmalign: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        from mmalign.utils.io_errors import environment_error

        user = environment_error(exc)
        if user is None or debug:
            raise
        print(f"mmalign: error: {user}", file=sys.stderr)
        return user.exit_code
    except KeyboardInterrupt:
        print("mmalign: interrupted", file=sys.stderr)
        return 130
    finally:
        close_open_runs()  # a run that failed before it started gives back the run it replaced


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
