"""Export parity of an SFT'd Nano on the bundled text task, for every export format.

Builds the toy-width Nano the demo uses (``mmalign zoo init nano`` + ``mmalign sft`` on
``bundled:text/sft_train``) unless ``--checkpoint`` names one, then exports ONNX fp32 / int8 / int4
and GGUF F16 / Q8_0 / Q4_0 and verifies each on 20 held-out prompts (``bundled:text/prompts_eval``)
x 32 greedy tokens. Prints a markdown table (the numbers in docs/export.md come from here).

    python scripts/export_parity_report.py [--checkpoint DIR] [--workdir DIR] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPORTS = [("onnx", "fp32"), ("onnx", "int8"), ("onnx", "int4"), ("gguf", "f16"), ("gguf", "q8_0"),
           ("gguf", "q4_0")]


def cli(*argv: str) -> None:
    from mmalign.cli.main import main

    print("$ mmalign " + " ".join(argv), flush=True)
    if main(list(argv)):
        sys.exit(f"mmalign {argv[0]} failed")


def build_sft_nano(work: Path, steps: int) -> Path:
    from mmalign.data import load_sft

    final = work / "runs/sft-nano/final"
    if (final / "config.json").is_file():
        return final
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(r.prompt + r.response for r in load_sft("bundled:text/sft_train")), encoding="utf-8")
    cli("zoo", "init", "nano", "--out", str(work / "nano-init"), "--width-scale", "0.0625", "--layers", "2",
        "--vocab-size", "512", "--text", str(corpus), "--overwrite")
    cli("sft", str(REPO / "configs/demo/sft_nano.yaml"), f"model.path={work / 'nano-init'}",
        f"run.output_dir={work / 'runs'}", f"train.steps={steps}", "--overwrite")
    return final


def held_out_prompts(work: Path, count: int) -> Path:
    from mmalign.data import load_prompts

    seen: list[str] = []
    for record in load_prompts("bundled:text/prompts_eval"):
        if record.prompt not in seen:
            seen.append(record.prompt)
        if len(seen) == count:
            break
    path = work / "heldout_prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in seen), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="an SFT'd checkpoint (default: build one)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--steps", type=int, default=300, help="SFT steps when building the checkpoint")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()

    from mmalign.export.api import export_checkpoint
    from mmalign.utils.progress import set_quiet

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="export-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else build_sft_nano(work, args.steps)
    prompts = held_out_prompts(work, args.prompts)
    set_quiet(True)
    rows = []
    for fmt, quant in EXPORTS:
        report = export_checkpoint(ckpt, fmt, quant, work / f"export-{fmt}-{quant}", overwrite=True,
                                   eval_prompts=prompts, eval_count=args.prompts, eval_tokens=args.tokens)
        rows.append(report)
        p = report["parity"]
        print(f"{fmt} {quant}: rel err {p['logit_rel_err_max']:.2e}, greedy {p['greedy_agreement']:.1%}", flush=True)
    print(f"\ncheckpoint {ckpt}; {args.prompts} held-out prompts x {args.tokens} greedy tokens\n")
    print("| format | quant | size vs fp32 | logit rel. err (max / mean) | greedy agreement (stop at EOS) | strict (past EOS) "
          "| teacher-forced | runtime |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["parity"]
        print(f"| {r['format']} | {r['quant']} | {r['size_ratio_vs_fp32']:.0%} | {p['logit_rel_err_max']:.2e} / "
              f"{p['logit_rel_err_mean']:.2e} | {p['greedy_agreement']:.1%} | {p['strict_agreement']:.1%} | "
              f"{p['teacher_forced_agreement']:.1%} | "
              f"{p['runtime']} |")
    (work / "parity.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
