"""Benchmark: the same model and MMLU data through lm-eval's ``hf`` model and through mmalign.

    python scripts/bench/mmlu_vs_lmeval.py [--test 80] [--shots 5] [--batch-size 16] [--hidden 256] [--layers 4]

Builds a random toy Llama (hidden 256, 4 layers, 2048-token window) and a synthetic MMLU-format
dataset (5 subjects x ``--test`` questions) in a scratch directory, then runs

* ``lm_eval.simple_evaluate(model="hf", model_args="pretrained=DIR,dtype=float32,device=cpu")`` on
  local task files (offline), and
* ``mmalign``'s scorer through the policy factory's text adapter (``load_policy``, then
  ``score_continuations``: shared one-token choices, batched, few-shot prefix KV cache),

with the same batch size, and prints both wall times (model loading included), the ratio, both
accuracies and whether every per-question prediction agrees.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_mmlu_sample import write_sample  # noqa: E402

from mmalign.evaluation.mmlu.data import load_mmlu  # noqa: E402
from mmalign.evaluation.mmlu.lm_eval_tasks import (  # noqa: E402
    lm_eval_predictions,
    run_lm_eval_hf,
    write_lm_eval_tasks,
)
from mmalign.evaluation.mmlu.scorer import score_loglik  # noqa: E402
from mmalign.models.loading import load_policy  # noqa: E402
from mmalign.models.toy import SAMPLE_TEXT, build_tiny_llama  # noqa: E402
from mmalign.utils.progress import set_quiet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", type=int, default=80, help="test questions per subject (5 subjects)")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both runs (1: steady on a shared CPU)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    set_quiet(True)
    import torch

    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mmlu_bench_"))
    data_dir = write_sample(work / "data", test=args.test)
    texts = SAMPLE_TEXT * 10 + [p.read_text(encoding="utf-8") for p in sorted((work / "data" / "dev").glob("*.csv"))]
    model_dir = work / "model"
    if not (model_dir / "config.json").is_file():
        build_tiny_llama(model_dir, texts, vocab_size=1024, seed=0, hidden_size=args.hidden, num_layers=args.layers,
                         num_heads=8, num_kv_heads=4, max_position=2048)
    data = load_mmlu(data_dir)
    subjects = data.select(None)
    tasks = write_lm_eval_tasks(data, subjects, work / "tasks")
    n = sum(len(data.get("test", s)) for s in subjects)
    print(f"{n} questions, {len(subjects)} subjects, {args.shots}-shot, batch size {args.batch_size}, "
          f"toy Llama hidden {args.hidden} x {args.layers} layers, {args.threads} torch thread(s)")

    t0 = time.perf_counter()
    ref = run_lm_eval_hf(model_dir, work / "tasks", tasks, shots=args.shots, batch_size=args.batch_size)
    t_ref = time.perf_counter() - t0

    t0 = time.perf_counter()
    policy = load_policy(model_dir, device="cpu", dtype="float32")
    stats: dict[str, int] = {}
    ours = score_loglik(policy, data, subjects, shots=args.shots, batch_size=args.batch_size, stats=stats)
    t_ours = time.perf_counter() - t0

    ref_preds = [p[0] for t in tasks for p in lm_eval_predictions(ref, t)]
    our_preds = [r.pred for s in subjects for r in ours[s]]
    golds = [q.answer for s in subjects for q in data.get("test", s)]
    acc_ref = sum(p == g for p, g in zip(ref_preds, golds)) / n
    acc_ours = sum(p == g for p, g in zip(our_preds, golds)) / n
    print(f"lm-eval hf : {t_ref:8.2f} s   acc {acc_ref:.4f}")
    print(f"mmalign    : {t_ours:8.2f} s   acc {acc_ours:.4f}")
    print(f"speed-up   : {t_ref / t_ours:8.2f}x   identical predictions: {ref_preds == our_preds}")
    print(f"forward tokens {stats['forward_tokens']} + prefix {stats['prefix_tokens']}")


if __name__ == "__main__":
    main()
