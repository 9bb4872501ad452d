"""``mmalign zoo list|show|init``: the model tiers (Nano / Pro / Ultra) and toy checkpoints of them."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_common_flags

    parser = sub.add_parser("zoo", help="list, show or instantiate model tiers")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser), required=True)
    ls = actions.add_parser("list", help="list the tiers")
    ls.add_argument("--family", default=None, help="only this family (text, vision, audio, multimodal)")
    show = actions.add_parser("show", help="print one tier's spec")
    show.add_argument("tier", help="tier name, e.g. nano or text/pro")
    init = actions.add_parser("init", help="write a randomly initialised checkpoint of a tier")
    init.add_argument("tier", help="tier name, e.g. nano or text/pro")
    init.add_argument("--out", required=True, help="output directory")
    init.add_argument("--width-scale", type=float, default=1.0, help="shrink widths and depth (0 < s <= 1)")
    init.add_argument("--layers", type=int, default=None, help="override the number of layers")
    init.add_argument("--context", type=int, default=None, help="override the context length")
    init.add_argument("--text", default=None, help="UTF-8 text file to train the tokenizer on")
    init.add_argument("--vocab-size", type=int, default=512, help="tokenizer vocabulary size")
    init.add_argument("--tokenizer", default=None, help="reuse the tokenizer in this directory")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    for p in (ls, show, init):
        add_common_flags(p)
    ls.set_defaults(func=_list)
    show.set_defaults(func=_show)
    init.set_defaults(func=_init)


def _human(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _list(args: argparse.Namespace) -> int:
    from mmalign.zoo import estimate_params, list_tiers

    rows = [("TIER", "PARAMS", "PRECISION", "PLACEMENT", "CHECKPOINTS")]
    for t in list_tiers(args.family):
        params = _human(estimate_params(t.architecture)) if t.family == "text" else "-"
        rows.append((t.full_name, params, t.precision, t.placement, ", ".join(t.checkpoints) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def _show(args: argparse.Namespace) -> int:
    import yaml

    from mmalign.zoo import estimate_params, get_tier

    tier = get_tier(args.tier)
    data = tier.as_dict()
    if tier.family == "text":
        data["estimated_params"] = _human(estimate_params(tier.architecture))
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _check_fits(params: int) -> None:
    """Refuse a checkpoint whose float32 weights (twice over: built, then saved) exceed this machine's memory."""
    import os

    from mmalign.errors import UserError

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: nothing to compare against
        return
    need = params * 4 * 2
    if need > memory:
        raise UserError(f"--vocab-size / --width-scale / --layers: up to {_human(params)} parameters need about "
                        f"{need / 2**30:.0f} GiB, more than this machine's {memory / 2**30:.0f} GiB")


def _init(args: argparse.Namespace) -> int:
    from mmalign.errors import UserError
    from mmalign.models.loading import quiet_hf_progress
    from mmalign.utils.progress import echo
    from mmalign.zoo import build_tier, estimate_params, get_tier, scale_architecture

    quiet_hf_progress()
    tier = get_tier(args.tier)
    if args.vocab_size < 64:
        raise UserError(f"--vocab-size must be >= 64, got {args.vocab_size}")
    if args.layers is not None and args.layers < 1:
        raise UserError(f"--layers must be >= 1, got {args.layers}")
    if args.context is not None and args.context < 2:
        raise UserError(f"--context must be >= 2 (a prompt token and one new token), got {args.context}")
    if not 0 < args.width_scale <= 1:
        raise UserError(f"--width-scale must be in (0, 1], got {args.width_scale}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out}: directory is not empty; pass --overwrite or pick another --out")
    texts = None
    if args.text is not None:
        path = Path(args.text)
        if not path.is_file():
            raise UserError(f"--text: file not found: {path}")
        try:
            texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise UserError(f"--text: {path} is not UTF-8 text") from None
        if not texts:
            raise UserError(f"--text: {path} is empty")
    if args.tokenizer is not None and not Path(args.tokenizer).is_dir():
        raise UserError(f"--tokenizer: directory not found: {args.tokenizer}")
    if tier.family == "text":
        arch = scale_architecture(tier.architecture, args.width_scale, args.layers)
        _check_fits(estimate_params(arch, args.vocab_size))
    build_tier(tier, out, texts=texts, vocab_size=args.vocab_size, width_scale=args.width_scale,
               num_layers=args.layers, context_length=args.context,
               tokenizer_dir=args.tokenizer if tier.family == "text" else None, seed=args.seed)
    if tier.family != "text":
        echo(f"wrote {tier.full_name} at width scale {args.width_scale} to {out}")
        return 0
    echo(f"wrote {tier.full_name} (hidden {arch['hidden_size']}, {arch['num_layers']} layers, "
         f"{arch['num_heads']}/{arch['num_kv_heads']} heads, ~{_human(estimate_params(arch, args.vocab_size))} "
         f"params) to {out}")
    return 0
