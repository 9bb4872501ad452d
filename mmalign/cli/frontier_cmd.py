"""``mmalign frontier [recommend] --procedure P --n N --kl K[,K...] ...``.

``mmalign frontier`` prints win rate vs KL for each transform (table, ``--json`` records,
``--plot`` PNG); ``mmalign frontier recommend`` prints the transform, t and beta for a training
config at one KL.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mmalign.align.procedures import PROCEDURES
from mmalign.errors import UserError

DEFAULT_KLS = (0.1, 0.25, 0.5, 1.0, 2.0)


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_common_flags

    parser = sub.add_parser(
        "frontier", help="win rate vs KL of reward transforms under an inference procedure",
        description="Exact inference-time win rate vs KL for tilted policies (calibrated reward "
                    "scale). 'frontier recommend' prints what to put in a training config.")
    parser.add_argument("action", nargs="?", choices=("recommend",), metavar="recommend",
                        help="print the transform, t and beta for one KL")
    parser.add_argument("--procedure", default="bon", choices=PROCEDURES,
                        help="inference procedure (default: bon)")
    parser.add_argument("--n", type=int, default=4, help="samples per procedure call (default: 4)")
    parser.add_argument("--transform", action="append", metavar="NAME[,NAME...]",
                        help="identity, log, exp, neg_exp, power, optimal (repeatable or comma list)")
    parser.add_argument("--t", type=float, default=None,
                        help="t of exp/neg_exp (omit to search the best t per KL)")
    parser.add_argument("--k", type=float, default=None, help="exponent of power")
    parser.add_argument("--kl", action="append", metavar="K[,K...]",
                        help=f"target KL values (default: {','.join(f'{k:g}' for k in DEFAULT_KLS)})")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--plot", metavar="FILE.png", help="write a win rate vs KL plot")
    add_common_flags(parser)
    parser.set_defaults(func=_run)


def _split(values: Sequence[str] | None) -> list[str]:
    return [part.strip() for v in values or () for part in v.split(",") if part.strip()]


def _floats(values: Sequence[str] | None, what: str) -> list[float]:
    out = []
    for part in _split(values):
        try:
            out.append(float(part))
        except ValueError:
            raise UserError(f"--{what}: '{part}' is not a number") from None
    return out


def _default_transforms(procedure: str) -> list[str]:
    family = "neg_exp" if procedure == "won" else "exp"
    return ["identity", "log", family, "optimal"]


def _run(args: argparse.Namespace) -> int:
    from mmalign.align.procedures import get_procedure

    proc = get_procedure(args.procedure, args.n)
    kls = _floats(args.kl, "kl")
    if args.action == "recommend":
        return _recommend(args, proc.name, proc.n, kls)
    transforms = _split(args.transform) or _default_transforms(proc.name)
    transforms = list(dict.fromkeys(transforms))
    return _frontier(args, proc.name, proc.n, transforms, kls or list(DEFAULT_KLS))


def _frontier(args: argparse.Namespace, procedure: str, n: int, transforms: list[str],
              kls: list[float]) -> int:
    from mmalign.align.analytic import check_kl
    from mmalign.align.frontier import check_transform_params, frontier
    from mmalign.utils.progress import progress

    check_transform_params(transforms, args.t, args.k)
    for kl in kls:
        check_kl(kl)
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot: '{args.plot}' must be a .png file")
    records = frontier(procedure, n, kls, transforms, t=args.t, k=args.k, progress=progress)
    if args.plot:
        _plot(args, procedure, n, transforms, kls)
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=1))
        return 0
    title = "standard sampling" if procedure == "standard" else (
        f"{'best' if procedure == 'bon' else 'worst'}-of-N, N={n}")
    print(f"{title}: win rate of the procedure on the aligned policy vs on the reference")
    print(f"{'transform':<10} {'t':>9} {'beta':>11} {'KL':>7} {'win rate':>9}")
    for r in records:
        t = "-" if r.t is None else f"{r.t:.3f}"
        print(f"{r.transform:<10} {t:>9} {r.beta:>11.4e} {r.kl:>7.3g} {r.win_rate:>9.5f}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _recommend(args: argparse.Namespace, procedure: str, n: int, kls: list[float]) -> int:
    from mmalign.align.frontier import recommend

    for flag, value in (("--transform", args.transform), ("--t", args.t), ("--k", args.k),
                        ("--plot", args.plot)):
        if value is not None:
            raise UserError(f"frontier recommend does not take {flag} (it picks the transform)")
    if len(kls) != 1:
        raise UserError(f"frontier recommend needs exactly one --kl value, got {len(kls)}")
    rec = recommend(procedure, n, kls[0])
    if args.json:
        print(json.dumps(rec.as_dict(), indent=1))
        return 0
    gap = rec.optimal_win_rate - rec.win_rate
    print(f"# {procedure} N={n} at KL={rec.kl:g}: win rate {rec.win_rate:.5f} "
          f"(optimal transform {rec.optimal_win_rate:.5f}, gap {gap:.1e})")
    print(f"transform: {rec.transform}")
    if rec.t is not None:
        print(f"t: {rec.t:.6g}")
    print(f"beta: {rec.beta:.6g}")
    return 0


def _plot(args: argparse.Namespace, procedure: str, n: int, transforms: list[str],
          kls: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mmalign.align.frontier import frontier
    from mmalign.utils.progress import progress

    lo, hi = min(min(kls), 0.01), max(max(kls), 0.02)
    dense = sorted(set(np.geomspace(lo, hi, 20).tolist()) | set(kls))
    curves = [*(t for t in transforms if t != "optimal"), "optimal"]
    records = frontier(procedure, n, dense, curves, t=args.t, k=args.k, progress=progress)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name in curves:
        pts = [r for r in records if r.transform == name]
        label = "optimal (frontier)" if name == "optimal" else name
        if name in ("exp", "neg_exp"):
            label += f" (t={args.t:g})" if args.t is not None else " (best t)"
        if name == "power":
            label += f" (k={args.k:g})"
        style = dict(color="black", lw=2.2, ls="--", zorder=5) if name == "optimal" else dict(lw=1.5)
        ax.plot([r.kl for r in pts], [r.win_rate for r in pts], label=label, **style)
    ax.set_xscale("log")
    ax.set_xlabel("KL(π ‖ π_ref)")
    ax.set_ylabel("inference-time win rate")
    title = "standard sampling" if procedure == "standard" else f"{procedure}, N={n}"
    ax.set_title(f"Win rate vs KL: {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(args.plot)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path)
    except OSError as exc:
        raise UserError(f"--plot: cannot write '{path}' ({exc.strerror})") from None
    finally:
        plt.close(fig)
