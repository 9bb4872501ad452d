"""Recipe ``reward``: train a Bradley-Terry reward model on preference pairs.

    loss = -log sigmoid(r(x, y_chosen) - r(x, y_rejected))

The model is ``AutoModelForSequenceClassification`` with one label, started from a checkpoint
(a causal LM gets a fresh scalar head) or from a toy-width Llama with a tokenizer trained on the
data. Held-out pairwise accuracy is logged every ``train.eval_every`` steps. The result,
``<run>/final/``, is a Hugging Face folder (safetensors + tokenizer + ``mmalign_reward.json``)
that ``reward: {kind: hf_classifier, path: <run>/final}`` loads. The model, the pair scorer, the
loss, the evaluation and the saved folder are :mod:`mmalign.rewards.bradley_terry`'s; this recipe
wires them and owns the loop (data split, schedule, checkpoints, resume) on
:mod:`mmalign.training`: the shared batch order, a warm-up + cosine schedule down to 10% of
``train.lr`` at the last step, and ``checkpoints/step-*/`` in the format every recipe shares (the
model is rebuilt from the config on ``--resume``; its weights come from the checkpoint).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mmalign.config import to_yaml
from mmalign.config.schemas.reward_train import RewardRecipeConfig
from mmalign.data import PreferenceRecord, load_preferences
from mmalign.errors import ConfigError
from mmalign.rewards.bradley_terry import (
    PairScorer,
    bt_loss,
    build_reward_model,
    evaluate_pairs,
    save_reward_model,
)
from mmalign.rewards.hf_classifier import resolve_format
from mmalign.training import batches
from mmalign.training import checkpoint as ckpt
from mmalign.training.divergence import check_finite_weights, clip_and_check, lr_hint
from mmalign.training.schedule import make_scheduler, optimizer_step
from mmalign.utils.atomic import atomic_directory
from mmalign.utils.device import resolve_device, resolve_dtype
from mmalign.utils.progress import echo, is_quiet, progress
from mmalign.utils.rundir import RunDir
from mmalign.utils.seed import seed_everything


@dataclass
class RewardResult:
    run_dir: Path
    final_dir: Path
    steps: int
    eval_accuracy: float
    eval_loss: float
    seconds: float


def split_pairs(cfg: RewardRecipeConfig) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """Training and held-out pairs (the held-out share is drawn with the run seed)."""
    train = load_preferences(cfg.data.train)
    if cfg.data.eval is not None:
        return train, load_preferences(cfg.data.eval)
    order = list(range(len(train)))
    random.Random(cfg.run.seed).shuffle(order)
    n_eval = max(1, int(round(cfg.data.eval_fraction * len(train))))
    if n_eval >= len(train):
        raise ConfigError(f"data.eval_fraction: leaves no training pairs out of {len(train)}")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(train) if i not in held], [train[i] for i in sorted(held)]


def run(cfg: RewardRecipeConfig, *, overwrite: bool = False, resume: bool = False) -> RewardResult:
    """Train, evaluate and save a reward model; returns where it went and how well it does."""
    t0 = time.monotonic()
    if is_quiet():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    train_pairs, eval_pairs = split_pairs(cfg)
    rundir = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite, resume=resume)
    log = rundir.logger
    seed_everything(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    dtype = resolve_dtype(cfg.run.dtype, device)
    found = ckpt.resume_point(rundir)
    model, tokenizer = build_reward_model(cfg.model, train_pairs, dtype)
    model.to(device).train()
    fmt, saved_sep = resolve_format(cfg.model.format, tokenizer, cfg.model.path or None)
    sep = saved_sep if saved_sep is not None and cfg.model.format == "auto" else cfg.model.separator
    scorer = PairScorer(model, tokenizer, fmt, sep, cfg.train.max_length, device)
    tc = cfg.train
    params = list(model.parameters())
    optim = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(train_pairs) / tc.batch_size)
    total = steps_per_epoch * tc.epochs if tc.max_steps is None else min(tc.max_steps, steps_per_epoch * tc.epochs)
    sched = make_scheduler(optim, "cosine", warmup_steps=tc.warmup_steps, total_steps=total, min_lr_ratio=0.1)
    state = {"groups": {"model": params}, "optimizer": optim, "scheduler": sched}
    start_step = 0
    if found is not None:  # after creating the scheduler, which resets the optimizer's lr
        ckpt.restore_training(found, **state)
        start_step = found.step
    log.info("pairs: %d train, %d held out; %d steps; format=%s; params=%d", len(train_pairs), len(eval_pairs),
             total, fmt, sum(p.numel() for p in params))
    rundir.started()  # components loaded: only now is a run that --overwrite replaces deleted
    hint = lr_hint("train.lr", tc.lr)

    metrics: dict[str, float] = {}
    step = start_step
    deadline = t0 + 60 * tc.max_minutes if tc.max_minutes else None
    bar = progress(total=total, desc="reward", initial=start_step)
    while step < total and (deadline is None or time.monotonic() < deadline):
        rc, rr = scorer([train_pairs[i] for i in batches.batch(len(train_pairs), tc.batch_size, step, cfg.run.seed)])
        loss = bt_loss(rc, rr)
        loss.backward()
        gnorm = clip_and_check("reward", step + 1, hint, params, tc.grad_clip, loss.detach())
        lr = optimizer_step(optim, sched)
        bar.update(1)
        done = step + 1
        if done % tc.log_every == 0:
            rundir.log_metrics(done, loss=float(loss.detach()), train_accuracy=float((rc.detach() > rr.detach()).float().mean()),
                               grad_norm=float(gnorm), lr=lr)
        if done % tc.eval_every == 0:
            metrics = evaluate_pairs(scorer, eval_pairs, tc.eval_batch_size)
            rundir.log_metrics(done, **metrics)
            log.info("step %d: %s", done, json.dumps(metrics))
            bar.set_postfix(acc=f"{metrics['eval_accuracy']:.3f}")
        if done % tc.save_every == 0:
            check_finite_weights("reward", done, hint, params)
            ckpt.save_training(rundir.checkpoints, done, keep=ckpt.DEFAULT_KEEP, **state)
        step = done
    bar.close()
    check_finite_weights("reward", step, hint, params)
    if not metrics or step % tc.eval_every:
        metrics = evaluate_pairs(scorer, eval_pairs, tc.eval_batch_size)
        rundir.log_metrics(step, **metrics)
    final = rundir.path / "final"
    with atomic_directory(final, overwrite=True) as tmp:
        save_reward_model(tmp, model, tokenizer, fmt, sep, tc.max_length)
    seconds = time.monotonic() - t0
    rundir.log_metrics(step, final=True, seconds=round(seconds, 2), **metrics)
    log.info("saved %s (held-out accuracy %.4f after %d steps, %.1fs)", final, metrics["eval_accuracy"], step, seconds)
    rundir.finish()
    echo(f"reward model: {final} (held-out pairwise accuracy {metrics['eval_accuracy']:.3f}, {step} steps, {seconds:.0f}s)")
    return RewardResult(rundir.path, final, step, metrics["eval_accuracy"], metrics["eval_loss"], seconds)

