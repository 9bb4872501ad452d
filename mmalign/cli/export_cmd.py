"""``mmalign export --checkpoint DIR --format gguf|onnx|bnb --quant Q --out DIR``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mmalign.cli.main import add_common_flags
    from mmalign.export.prompts import EVAL_COUNT, EVAL_TOKENS, GREEDY_COUNT

    parser = sub.add_parser("export", help="export a checkpoint to GGUF, ONNX or bitsandbytes, with a parity report",
                            description="Export a Llama-architecture HF checkpoint for edge / PyTorch deployment "
                                        "and verify it against the PyTorch model (export_report.json/.md).")
    parser.add_argument("--checkpoint", required=True, help="Hugging Face model directory (or a LoRA adapter dir)")
    parser.add_argument("--format", required=True, dest="fmt", metavar="FORMAT", help="gguf | onnx | bnb")
    parser.add_argument("--quant", default=None,
                        help="gguf: f16|q8_0|q4_0 (q8_0); onnx: fp32|int8|int4 (int8); bnb: nf4|int8 (nf4)")
    parser.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--eval-prompts", default=None, metavar="FILE",
                        help="held-out prompts for verification (.txt one per line, or .jsonl with 'prompt')")
    parser.add_argument("--eval-count", type=int, default=EVAL_COUNT, metavar="P",
                        help=f"number of prompts ({EVAL_COUNT})")
    parser.add_argument("--eval-tokens", type=int, default=EVAL_TOKENS, metavar="T",
                        help=f"reference greedy tokens per prompt, scored teacher-forced ({EVAL_TOKENS})")
    parser.add_argument("--greedy-prompts", type=int, default=GREEDY_COUNT, metavar="G",
                        help=f"prompts also compared free-running, greedy agreement ({GREEDY_COUNT}; 0: none)")
    parser.add_argument("--chat-template", default="auto", choices=("auto", "on", "off"),
                        help="wrap prompts in the tokenizer's chat template (auto: if it has one)")
    parser.add_argument("--keep-low-parity", action="store_true",
                        help="keep an export whose parity is below its quant's floor (exit 0, with a warning)")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check")
    parser.add_argument("--int8-compute", default="int8", choices=("int8", "fp32"),
                        help="onnx int8 only: multiply per-block int8 activations (int8, fast) or "
                             "de-quantized weights in fp32 (closer to fp32, several times slower to decode)")
    add_common_flags(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mmalign.export.api import check_format, export_checkpoint
    from mmalign.utils.io_errors import reading

    check_format(args.fmt, args.quant)  # fail fast, before importing torch
    with reading(args.checkpoint, "--checkpoint"):  # corrupt weights / JSON: one line naming the file
        report = export_checkpoint(args.checkpoint, args.fmt, args.quant, args.out, overwrite=args.overwrite,
                                   eval_prompts=args.eval_prompts, eval_count=args.eval_count,
                                   eval_tokens=args.eval_tokens, verify=not args.no_verify,
                                   greedy_count=args.greedy_prompts, chat_template=args.chat_template,
                                   keep_low_parity=args.keep_low_parity, int8_compute=args.int8_compute)
    line = (f"{report['format']} {report['quant']}: {report['size_bytes']:,} B "
            f"({report['size_ratio_vs_fp32']:.1%} of fp32) -> {args.out}")
    parity = report.get("parity")
    if parity:
        line += (f"; mean KL {parity['mean_kl']:.2e}, teacher-forced top-1 {parity['teacher_forced_agreement']:.1%}"
                 f", logit rel err max {parity['logit_rel_err_max']:.2e}")
        if parity.get("greedy_prompts", -1) != 0:
            line += (f", greedy agreement {parity['greedy_agreement']:.1%}, {parity['tokens_per_s']:.1f} tok/s "
                     f"(pytorch {parity['reference_tokens_per_s']:.1f})")
        line += f"; verified in {report.get('verify_seconds', 0):.0f} s"
    print(line)
    floor = report.get("parity_floor") or {}
    if floor and not floor.get("passed", True):
        import sys

        print(f"mmalign: warning: kept an export below its parity floor ({floor['why']})", file=sys.stderr)
    return 0
