"""`make demo`: the main job of mmalign on the bundled Nano default, offline, on CPU.

1. Build a toy-width Nano (`mmalign zoo init nano`) with a tokenizer trained on the task's text.
2. SFT it on the bundled text task: this is the reference policy (reused when already built).
3. CTRL for best-of-4: calibrate, transform with exp(t·c), KL-regularised RL (`mmalign align`).
4. Evaluate best-of-4 and standard win rates against the reference (`mmalign evaluate winrate`).
5. Print where the report is.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(".demo")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


def mmalign(*argv: str) -> None:
    from mmalign.cli.main import main

    print(f"\n$ mmalign {' '.join(argv)}", flush=True)
    code = main(list(argv))
    if code:
        sys.exit(code)


def corpus() -> Path:
    """The text the demo tokenizer is trained on: the bundled task's prompts and demonstrations."""
    from mmalign.data import load_sft

    path = WORK / "corpus.txt"
    if not path.exists():
        records = load_sft("bundled:text/sft_train")
        path.write_text("\n".join(r.prompt + r.response for r in records), encoding="utf-8")
    return path


def main() -> None:
    os.chdir(REPO)
    WORK.mkdir(exist_ok=True)
    started = time.time()
    init = WORK / "nano-init"
    reference = WORK / "runs/sft-nano/final"
    if not (reference / "config.json").exists():
        if not (init / "config.json").exists():
            mmalign("zoo", "init", "nano", "--out", str(init), "--width-scale", "0.0625", "--layers", "2",
                    "--vocab-size", "512", "--text", str(corpus()), "--overwrite")
        mmalign("sft", "configs/demo/sft_nano.yaml", "--overwrite")
    else:
        print(f"reusing the SFT reference in {reference}")
    mmalign("align", "configs/demo/ctrl_bo4.yaml", "--overwrite")
    mmalign("evaluate", "winrate", "configs/demo/winrate_bo4.yaml", "--overwrite")
    results = json.loads((WORK / "runs/winrate-bo4/results.json").read_text())
    print(f"\nDemo finished in {time.time() - started:.0f} s.")
    for wr in results["win_rates"]:
        print(f"  {wr['label']:>10} win rate vs reference: {wr['win_rate']:.3f} "
              f"[{wr['ci_low']:.3f}, {wr['ci_high']:.3f}]")
    print(f"  KL(policy || reference) = {results['kl']:.3f} ± {results['kl_se']:.3f} nats")
    print(f"Report: {WORK / 'runs/winrate-bo4/report.md'}")


if __name__ == "__main__":
    main()
