"""`make demo`: the main job of mmalign on the bundled Nano default, offline, on CPU.

1. Build a toy-width Nano (`mmalign zoo init nano`) with a tokenizer trained on the task's text.
2. SFT it on the bundled text task: this is the reference policy (reused when already built).
3. CTRL for best-of-4: calibrate, transform with exp(t·c), KL-regularised RL (`mmalign align`).
4. Evaluate best-of-4 and standard win rates against the reference (`mmalign evaluate winrate`).
5. Print where the report is.

`--quick` runs every stage for a few steps (used by the test suite); `--work DIR` puts everything
under DIR instead of `.demo/`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

QUICK = {
    "sft": ["train.steps=6", "train.eval_every=3", "eval_data.max_rows=8"],
    "align": ["train.steps=2", "calibration.num_samples=4", "data.max_rows=8", "rollout.prompts_per_step=2",
              "rollout.max_new_tokens=4", "checkpoint.every=1"],
    "winrate": ["prompts.max_rows=4", "samples_per_prompt=4", "sampling.max_new_tokens=4",
                "bootstrap_reps=200", "frontier.points=3"],
}


def mmalign(*argv: str) -> None:
    from mmalign.cli.main import main

    print(f"\n$ mmalign {' '.join(argv)}", flush=True)
    code = main(list(argv))
    if code:
        sys.exit(code)


def corpus(work: Path) -> Path:
    """The text the demo tokenizer is trained on: the bundled task's prompts and demonstrations."""
    from mmalign.data import load_sft

    path = work / "corpus.txt"
    if not path.exists():
        records = load_sft("bundled:text/sft_train")
        path.write_text("\n".join(r.prompt + r.response for r in records), encoding="utf-8")
    return path


def run(work: Path, quick: bool) -> dict:
    """Run the demo under ``work``; returns the win-rate results."""
    work.mkdir(parents=True, exist_ok=True)
    runs = work / "runs"
    init, reference, policy = work / "nano-init", runs / "sft-nano" / "final", runs / "ctrl-bo4" / "final"
    flags = ["--quiet"] if quick else []
    if not (reference / "config.json").exists():
        if not (init / "config.json").exists():
            mmalign("zoo", "init", "nano", "--out", str(init), "--width-scale", "0.0625", "--layers", "2",
                    "--vocab-size", "512", "--text", str(corpus(work)), "--overwrite", *flags)
        mmalign("sft", "configs/demo/sft_nano.yaml", f"run.output_dir={runs}", f"model.path={init}",
                "--overwrite", *flags, *(QUICK["sft"] if quick else []))
    else:
        print(f"reusing the SFT reference in {reference}")
    mmalign("align", "configs/demo/ctrl_bo4.yaml", f"run.output_dir={runs}", f"model.path={reference}",
            "--overwrite", *flags, *(QUICK["align"] if quick else []))
    mmalign("evaluate", "winrate", "configs/demo/winrate_bo4.yaml", f"run.output_dir={runs}",
            f"policy.path={policy}", f"reference.path={reference}", "--overwrite", *flags,
            *(QUICK["winrate"] if quick else []))
    return json.loads((runs / "winrate-bo4" / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=".demo", help="working directory (default .demo)")
    parser.add_argument("--quick", action="store_true", help="a few steps of every stage (for tests)")
    args = parser.parse_args()
    os.chdir(REPO)
    started = time.time()
    work = Path(args.work)
    results = run(work, args.quick)
    print(f"\nDemo finished in {time.time() - started:.0f} s.")
    for wr in results["win_rates"]:
        print(f"  {wr['label']:>10} win rate vs reference: {wr['win_rate']:.3f} "
              f"[{wr['ci_low']:.3f}, {wr['ci_high']:.3f}]")
    print(f"  KL(policy || reference) = {results['kl']:.3f} ± {results['kl_se']:.3f} nats")
    print(f"Report: {work / 'runs' / 'winrate-bo4' / 'report.md'}")


if __name__ == "__main__":
    main()
