"""Recipe ``decode``: decode every prompt of a dataset with one of

* ``sample``: ``n`` ancestral samples (temperature / top-p / top-k), no reward;
* ``best_of_n`` / ``worst_of_n``: ``n`` samples, keep the argmax / argmin reward (ties: lowest index);
* ``blockwise``: reward-guided blockwise decoding, ``n`` candidates per ``block_size`` tokens.

Writes ``outputs.jsonl`` in the run directory: one record per prompt with the chosen response, all
candidates, their rewards and finish reasons.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmalign.config import to_yaml
from mmalign.config.schemas.decode import DecodeConfig
from mmalign.data import load_prompts
from mmalign.decoding import best_of_n, blockwise_decode
from mmalign.models.loading import load_policy
from mmalign.models.policy import to_prompt
from mmalign.utils.progress import echo, progress
from mmalign.utils.rundir import RunDir
from mmalign.utils.seed import seed_everything


@dataclass
class DecodeResult:
    run_dir: Path
    outputs: Path
    prompts: int
    mean_reward: float | None
    seconds: float


def run_decode(cfg: DecodeConfig, *, overwrite: bool = False, resume: bool = False) -> DecodeResult:
    started = time.time()
    seed_everything(cfg.run.seed)
    records = load_prompts(cfg.data)
    prompts = [to_prompt(r) for r in records]
    policy = load_policy(cfg.model, run_device=cfg.run.device, run_dtype=cfg.run.dtype)
    d = cfg.decode
    # every prompt must fit before any work (one-line error naming the prompt index)
    policy.check_prompts(prompts, d.max_new_tokens)
    reward = None
    if d.method != "sample":
        from mmalign.rewards import build_reward

        reward = build_reward(cfg.reward)
    run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite, resume=False)
    gen = torch.Generator(device=policy.device).manual_seed(cfg.run.seed)
    sampling: dict[str, Any] = dict(max_new_tokens=d.max_new_tokens, temperature=d.temperature, top_p=d.top_p,
                                    top_k=d.top_k, greedy=d.greedy, stop=list(d.stop), generator=gen)
    out_path = run.path / "outputs.jsonl"
    chosen_rewards: list[float] = []
    with out_path.open("w", encoding="utf-8") as fh:
        for start in progress(range(0, len(prompts), d.batch_size), desc="decode",
                              total=-(-len(prompts) // d.batch_size)):
            chunk = prompts[start:start + d.batch_size]
            if d.method == "sample":
                s = policy.sample(chunk, d.n, **sampling)
                rows = [{"prompt": p.text, "response": s.texts[i * d.n], "index": 0, "reward": None,
                         "candidates": s.texts[i * d.n:(i + 1) * d.n], "rewards": None,
                         "finish_reasons": s.finish_reasons[i * d.n:(i + 1) * d.n]} for i, p in enumerate(chunk)]
            elif d.method == "blockwise":
                rows = [c.as_record() for c in blockwise_decode(
                    policy, chunk, reward, block_size=d.block_size, num_candidates=d.n,
                    reward_batch_size=d.reward_batch_size, **sampling)]
            else:
                mode = "best" if d.method == "best_of_n" else "worst"
                rows = [c.as_record() for c in best_of_n(policy, chunk, reward, d.n, mode=mode,
                                                         reward_batch_size=d.reward_batch_size, **sampling)]
            for i, row in enumerate(rows):
                row = {"id": records[start + i].meta.get("id", start + i), "method": d.method, **row}
                if row["reward"] is not None:
                    chosen_rewards.append(row["reward"])
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    mean = sum(chosen_rewards) / len(chosen_rewards) if chosen_rewards else None
    run.log_metrics(0, prompts=len(prompts), mean_reward=mean)
    run.logger.info("decoded %d prompts with %s (n=%d)", len(prompts), d.method, d.n)
    run.finish()
    echo(f"wrote {out_path}")
    return DecodeResult(run_dir=run.path, outputs=out_path, prompts=len(prompts), mean_reward=mean,
                        seconds=time.time() - started)
