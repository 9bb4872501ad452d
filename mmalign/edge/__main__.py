"""``python -m mmalign.edge --model DIR --prompt "..."``: generate from an ONNX export, torch-free."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmalign.edge",
                                description="Generate from an mmalign ONNX export with onnxruntime (no torch).")
    p.add_argument("--model", required=True, help="export directory (model.onnx, tokenizer.json, mmalign_export.json)")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--n", type=int, default=1, help="number of samples (best-of-N with --best-of-n)")
    p.add_argument("--best-of-n", action="store_true",
                   help="keep the sample with the highest mean token log-prob (a built-in scorer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--json", action="store_true", help="print JSON lines (text, token ids, finish reason)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mmalign.edge.onnx_lm import OnnxLM
    from mmalign.edge.sampling import SamplingParams

    try:
        lm = OnnxLM(args.model, threads=args.threads)
        params = SamplingParams(greedy=not (args.sample or args.best_of_n), temperature=args.temperature,
                                top_p=args.top_p, top_k=args.top_k)
    except (FileNotFoundError, ValueError) as exc:
        print(f"mmalign.edge: error: {exc}", file=sys.stderr)
        return 2
    gens = lm.generate_ids(lm.encode(args.prompt), max_new_tokens=args.max_new_tokens, n=args.n,
                           params=params, seed=args.seed)
    if args.best_of_n:
        best = max(gens, key=lambda g: sum(g.logprobs) / max(len(g.logprobs), 1))
        gens = [best]
    for g in gens:
        if args.json:
            print(json.dumps({"text": g.text, "token_ids": g.token_ids, "finish_reason": g.finish_reason}))
        else:
            print(g.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
