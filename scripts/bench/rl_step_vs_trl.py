"""Benchmark: RL training steps/s of ``mmalign align`` against TRL's ``RLOOTrainer``, same setup.

    python scripts/bench/rl_step_vs_trl.py [--steps 8] [--prompts-per-step 8] [--n 4]
        [--max-new-tokens 32] [--hidden 256] [--layers 4] [--prompts 48] [--threads 1] [--rounds 2]

TRL is not a dependency of mmalign. On first use this script creates its own virtual environment
next to it (``scripts/bench/.venv-trl``, git-ignored) with ``python3 -m venv``, installs
``torch``, ``transformers``, ``trl`` (versions pinned below) and mmalign itself (editable, no
extras), then re-executes itself inside it so that both trainers run in one process.

Both trainers get the same random toy Llama (built with ``mmalign.models.toy.build_tiny_llama``
into a scratch directory), the same prompts (the first ``--prompts`` of
``bundled:text/prompts_train``), the same Python reward function, the same number of prompts per
step and generations per prompt, the same response length, sampling (temperature 1, no top-k /
top-p), AdamW (lr, betas, no weight decay, constant schedule, grad-norm clip 1.0), a fixed
KL coefficient with the k1 estimate subtracted from the sequence reward, RLOO advantages, one
optimisation pass per batch as one minibatch, PPO clip 0.2, float32 on the CPU, no gradient
checkpointing. TRL logs, evaluates and saves nothing during training; mmalign writes its one
metrics line per step (inside the timed step) and its final checkpoint after the last timed step.
The one algorithmic difference is the surrogate: TRL's RLOO clips the sequence-level ratio, mmalign
the per-token ratio (``loss_agg: seq_sum``); both cost one forward and backward pass.

One warm-up step, then ``--steps`` timed steps of each. A step is timed end to end (sampling,
reward, log-probs of policy and reference, the update): from the end of the warm-up step to the
end of the last step, model loading and trainer setup excluded. For mmalign the end of each step
is the ``time`` the recipe writes to ``metrics.jsonl``; for TRL a ``TrainerCallback``'s
``on_step_end``. Each trainer is measured ``--rounds`` times (alternating which goes first, a
fresh trainer each time) and its best round is kept. Prints steps/s for each and the ratio
mmalign / TRL.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
VENV = HERE.parent / ".venv-trl"
PINS = ("torch==2.14.1", "transformers==5.24.0", "trl==1.16.0")
_GUARD = "MMALIGN_BENCH_TRL_VENV"

KEYWORDS = frozenset({"the", "paris", "poem", "sea", "dog", "cat", "yes", "hello", "answer"})


def score_responses(prompts: list[str], responses: list[str]) -> list[float]:
    """The benchmark's reward: distinct words (capped) plus a bonus per keyword; cheap and pure."""
    del prompts
    out = []
    for r in responses:
        words = r.lower().split()
        out.append(min(len(set(words)), 8) / 8.0 + 0.5 * sum(w.strip(".,!?") in KEYWORDS for w in words))
    return out


def trl_reward(prompts, completions, **kwargs) -> list[float]:
    """``score_responses`` with TRL's reward-function signature."""
    del kwargs
    return score_responses(list(prompts), list(completions))


# ---------------------------------------------------------------------------------------------
# the benchmark's own environment
# ---------------------------------------------------------------------------------------------
def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv_and_reexec() -> None:
    """Run inside ``.venv-trl`` (created and filled on first use); return only when already there."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if os.environ.get(_GUARD):
        raise SystemExit(f"rl_step_vs_trl: re-executed in {VENV.name} but still outside it")
    py = _venv_python()
    if not py.is_file():
        print(f"creating {VENV.name} (first use) ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(py), "-c", "import trl, mmalign"], capture_output=True, text=True)
    if probe.returncode:
        print(f"installing {', '.join(PINS)} and mmalign into {VENV.name} ...", flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS, "-e", str(REPO)], check=True)
    env = dict(os.environ, **{_GUARD: "1"})
    os.execve(str(py), [str(py), str(HERE), *sys.argv[1:]], env)


# ---------------------------------------------------------------------------------------------
# the two trainers
# ---------------------------------------------------------------------------------------------
def run_mmalign(args, work: Path, model_dir: Path, tag: str) -> dict:
    """``run_align`` with matching settings; returns steps/s over the timed steps and a few metrics."""
    from mmalign.config import load_config
    from mmalign.config.schemas.align import AlignConfig
    from mmalign.recipes.align import run_align

    out = work / "mmalign_runs"
    overrides = [
        f"run.name={tag}", f"run.output_dir={out}", f"run.seed={args.seed}", "run.device=cpu",
        "run.dtype=float32",
        f"model.path={model_dir}", "model.chat_template='off'",
        "reward.kind=python", f"reward.function={HERE}:score_responses",
        "data.path=bundled:text/prompts_train", f"data.max_rows={args.prompts}",
        "objective=rl", "transform.name=raw",
        f"kl.beta={args.beta}", "kl.controller=fixed", "kl.estimator=k1", "kl.mode=reward",
        "advantage.estimator=rloo", "advantage.whiten=false",
        f"rollout.prompts_per_step={args.prompts_per_step}", f"rollout.n={args.n}",
        f"rollout.max_new_tokens={args.max_new_tokens}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        "rollout.top_k=0",
        f"train.steps={args.steps + 1}", f"train.lr={args.lr}", "train.weight_decay=0.0",
        "train.adam_betas=[0.9,0.999]", "train.schedule=constant", "train.warmup_steps=0", "train.epochs=1",
        "train.minibatches=1", "train.grad_accum=1", "train.max_grad_norm=1.0", "train.clip=0.2",
        "checkpoint.every=100000", "checkpoint.keep=1",
    ]
    cfg = load_config(None, AlignConfig, overrides)
    run_align(cfg, overwrite=True)
    rows = [json.loads(line) for line in (out / tag / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [r["time"] for r in rows]
    elapsed = times[-1] - times[0]
    return {"steps_per_s": args.steps / elapsed, "seconds": elapsed,
            "mean_response_tokens": sum(r["response_length"] for r in rows[1:]) / args.steps,
            "last_kl": rows[-1]["kl"], "last_reward": rows[-1]["reward_raw"]}


def run_trl(args, work: Path, model_dir: Path, prompts: list[str], tag: str) -> dict:
    """TRL's ``RLOOTrainer`` with matching settings; returns steps/s over the timed steps."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

            self.logs: dict = {}

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ARG002 - callback API
            self.times.append(time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ARG002 - callback API
            self.logs.update(logs or {})

    config = RLOOConfig(
        output_dir=str(work / "trl" / tag), seed=args.seed, use_cpu=True, bf16=False, fp16=False,
        model_init_kwargs={"dtype": "float32"}, gradient_checkpointing=False, disable_dropout=True,
        per_device_train_batch_size=args.prompts_per_step * args.n, gradient_accumulation_steps=1,
        num_generations=args.n, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0, beta=args.beta, num_iterations=1, epsilon=0.2,
        normalize_advantages=False, learning_rate=args.lr, optim="adamw_torch", adam_beta1=0.9,
        adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=1.0, max_steps=args.steps + 1, logging_strategy="no", report_to=[],
        save_strategy="no", eval_strategy="no", dataloader_num_workers=0, log_completions=False,
    )
    clock = StepClock()
    trainer = RLOOTrainer(model=str(model_dir), reward_funcs=[trl_reward], args=config,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[clock])
    trainer.train()
    elapsed = clock.times[-1] - clock.times[0]
    # logging is off, so the only log is the end-of-training summary: averages over all steps
    return {"steps_per_s": args.steps / elapsed, "seconds": elapsed,
            "mean_response_tokens": float(clock.logs.get("completions/mean_length", "nan"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per trainer (after one warm-up step)")
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--n", type=int, default=4, help="generations per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=48, help="prompts taken from bundled:text/prompts_train")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared CPU)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="measure each trainer this many times, alternating which goes first; best of each")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    ensure_venv_and_reexec()

    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers
    import trl

    from mmalign.data import load_prompts
    from mmalign.models.toy import SAMPLE_TEXT, build_tiny_llama
    from mmalign.utils.progress import set_quiet

    set_quiet(True)
    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rl_bench_"))
    prompts = [r.prompt for r in load_prompts("bundled:text/prompts_train", max_rows=args.prompts)]
    model_dir = work / "model"
    if not (model_dir / "config.json").is_file():
        build_tiny_llama(model_dir, SAMPLE_TEXT * 10 + prompts, vocab_size=args.vocab, seed=args.seed,
                         hidden_size=args.hidden, num_layers=args.layers, num_heads=8, num_kv_heads=4,
                         max_position=1024)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"toy Llama hidden {args.hidden} x {args.layers} layers, vocab {args.vocab}; {len(prompts)} prompts; "
          f"{args.prompts_per_step} prompts x {args.n} generations = {args.prompts_per_step * args.n} rows/step, "
          f"{args.max_new_tokens} new tokens; 1 warm-up + {args.steps} timed steps", flush=True)

    results: dict[str, list[dict]] = {"mmalign": [], "trl": []}
    for rnd in range(args.rounds):
        order = ("mmalign", "trl") if rnd % 2 == 0 else ("trl", "mmalign")
        for name in order:
            if name == "mmalign":
                r = run_mmalign(args, work, model_dir, f"round{rnd}")
            else:
                r = run_trl(args, work, model_dir, prompts, f"round{rnd}")
            torch.set_num_threads(args.threads)
            results[name].append(r)
            print(f"  round {rnd + 1} {name:8s}: {r['steps_per_s']:.3f} steps/s ({r['seconds']:.1f} s for "
                  f"{args.steps} steps, mean response {r['mean_response_tokens']:.1f} tokens)", flush=True)

    best = {k: max(v, key=lambda r: r["steps_per_s"]) for k, v in results.items()}
    ratio = best["mmalign"]["steps_per_s"] / best["trl"]["steps_per_s"]
    print()
    print("| trainer | steps/s | s per step |")
    print("|---|---:|---:|")
    for name, label in (("trl", f"TRL {trl.__version__} RLOOTrainer"), ("mmalign", "mmalign align (rloo)")):
        sps = best[name]["steps_per_s"]
        print(f"| {label} | {sps:.3f} | {1 / sps:.2f} |")
    print(f"| **ratio mmalign / TRL** | **{ratio:.2f}x** | |")
    try:
        load = os.getloadavg()
        print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    except OSError:
        pass


if __name__ == "__main__":
    main()
