"""Recipe ``sft``: supervised fine-tuning on (prompt, response) demonstrations.

    loss = - sum_{t in response} log pi(y_t | x, y_<t) / #response tokens

Prompt tokens carry no loss. With ``train.packing`` examples are concatenated into
``max_seq_len`` blocks (the loss mask still covers responses only). Held-out loss is logged before
training, every ``train.eval_every`` steps and at the end. The run directory holds config.yaml,
metrics.jsonl, run.log, checkpoints/step-*/ (the format every recipe shares,
:mod:`mmalign.training.checkpoint`: ``--resume`` continues from the newest that verifies) and
final/, a Hugging Face checkpoint (full weights or LoRA adapter) that every other verb loads with
``model.path: <run>/final``.

Records may carry images, audio or video (``Prompt(text, media)``); the policy loaded from
``model.path`` decides how they become embeddings. ``train.trainable: projector`` trains only the
media projectors (the first stage of multimodal SFT; the policy refuses it if it has none), then a
second run from that ``final/`` with ``trainable: all`` (optionally ``model.lora.enabled``) trains
the LM too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mmalign.config import to_yaml
from mmalign.config.schemas.sft import SFTConfig
from mmalign.data import load_sft
from mmalign.errors import ConfigError
from mmalign.models.finetune import (
    Example,
    pack_examples,
    packed_nll,
    response_nll,
    split_records,
    to_batch,
    tokenize_examples,
)
from mmalign.models.loading import load_policy, resolve_checkpoint
from mmalign.models.policy import to_prompt
from mmalign.models.text import TextPolicy
from mmalign.training import batches
from mmalign.training import checkpoint as ckpt
from mmalign.training.divergence import check_finite_weights, clip_and_check, lr_hint
from mmalign.training.schedule import make_scheduler, optimizer_step
from mmalign.utils.atomic import atomic_directory
from mmalign.utils.progress import echo, progress
from mmalign.utils.rundir import RunDir
from mmalign.utils.seed import seed_everything


@dataclass
class SFTResult:
    run_dir: Path
    final_dir: Path
    steps: int
    eval_loss_start: float
    eval_loss: float
    train_loss: float
    seconds: float


@torch.no_grad()
def eval_loss(policy: TextPolicy, examples: list[Example], batch_size: int) -> float:
    """Mean response-token NLL over ``examples`` (eval mode)."""
    if not examples:
        return float("nan")
    was = policy.training
    policy.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        nll, n = response_nll(policy, to_batch(policy, examples[i:i + batch_size]))
        total, count = total + float(nll.detach()), count + int(n)
    policy.train(was)
    return total / max(count, 1)


def accumulate(policy: TextPolicy, train: list[Example], t, step: int, seed: int) -> tuple[float, int]:
    """The ``grad_accum`` micro-batches of ``step``: gradients of the mean response-token NLL
    accumulate; returns (summed NLL, response tokens)."""
    total, count = 0.0, 0
    for micro in range(t.grad_accum):
        idx = batches.batch(len(train), t.batch_size, step * t.grad_accum + micro, seed)
        examples = [train[i] for i in idx]
        if t.packing:
            ids, mask = pack_examples(examples, t.max_seq_len, policy.pad_token_id)
            nll, n = packed_nll(policy, ids, mask)
        else:
            nll, n = response_nll(policy, to_batch(policy, examples))
        (nll / n.clamp(min=1) / t.grad_accum).backward()
        total, count = total + float(nll.detach()), count + int(n)
    return total, count


def start(run: RunDir, found: ckpt.Checkpoint | None, policy: TextPolicy, held: list[Example], eval_batch_size: int,
          state: dict) -> tuple[int, float]:
    """(first step, held-out loss before training): the checkpoint ``found`` loaded into ``state``
    (groups, optimizer, scheduler) with the held-out loss the run logged at step 0, or step 0 and
    that loss measured (and logged) now."""
    if found is None:
        first = eval_loss(policy, held, eval_batch_size)
        run.log_metrics(0, eval_loss=first)
        return 0, first
    ckpt.restore_training(found, **state)
    return found.step, next((m["eval_loss"] for m in run.read_metrics() if "eval_loss" in m), float("nan"))


def run_sft(cfg: SFTConfig, *, overwrite: bool = False, resume: bool = False) -> SFTResult:
    started = time.time()
    seed_everything(cfg.run.seed)
    train_records, eval_records = split_records(
        load_sft(cfg.data), load_sft(cfg.eval_data) if cfg.eval_data is not None else None,
        cfg.eval_fraction, cfg.run.seed)
    resolve_checkpoint(cfg.model.path)  # fail fast, before a run directory exists
    if cfg.train.packing and any(r.media for r in train_records):
        raise ConfigError("train.packing: prompts with images/audio/video cannot be packed; set train.packing=false")
    run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite, resume=resume)
    t = cfg.train
    found = ckpt.resume_point(run)
    policy = load_policy(cfg.model, run_device=cfg.run.device, run_dtype=cfg.run.dtype)
    policy.set_trainable(t.trainable)
    params = policy.trainable_parameters()
    if not params:
        raise ConfigError("model: nothing to train (quantised weights train through LoRA: set model.lora.enabled)")

    train = tokenize_examples(policy, [to_prompt(r) for r in train_records], [r.response for r in train_records],
                              max_seq_len=t.max_seq_len, sources=[r.source for r in train_records])
    held = tokenize_examples(policy, [to_prompt(r) for r in eval_records], [r.response for r in eval_records],
                             max_seq_len=t.max_seq_len, sources=[r.source for r in eval_records]) if eval_records else []
    run.logger.info("sft: %d training / %d held-out examples, %d trainable parameters", len(train), len(held),
                    sum(p.numel() for p in params))
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = make_scheduler(opt, "constant", warmup_steps=t.warmup_steps, total_steps=t.steps)
    state = {"groups": {"policy": params}, "optimizer": opt, "scheduler": sched}
    run.started()  # components loaded: only now is a run that --overwrite replaces deleted
    hint = lr_hint("train.lr", t.lr)

    start_step, first_eval = start(run, found, policy, held, t.eval_batch_size, state)
    policy.train()
    train_loss = float("nan")
    bar = progress(range(start_step, t.steps), desc="sft", total=t.steps, initial=start_step)
    for step in bar:
        total, count = accumulate(policy, train, t, step, cfg.run.seed)
        train_loss = total / max(count, 1)
        clip_and_check("sft", step + 1, hint, params, t.max_grad_norm, train_loss)  # before the step
        lr = optimizer_step(opt, sched)
        done = step + 1
        metrics = {}
        if done % t.log_every == 0 or done == t.steps:
            metrics.update(train_loss=train_loss, lr=lr, tokens=count)
        if held and ((t.eval_every and done % t.eval_every == 0) or done == t.steps):
            metrics["eval_loss"] = eval_loss(policy, held, t.eval_batch_size)
            bar.set_postfix(eval_loss=f"{metrics['eval_loss']:.3f}")
        if metrics:
            run.log_metrics(done, **metrics)
        if t.save_every and done % t.save_every == 0 and done < t.steps:
            check_finite_weights("sft", done, hint, params)
            ckpt.save_training(run.checkpoints, done, keep=ckpt.DEFAULT_KEEP, **state)

    check_finite_weights("sft", t.steps, hint, params)
    final_eval = eval_loss(policy, held, t.eval_batch_size)
    final = run.path / "final"
    with atomic_directory(final, overwrite=True) as tmp:
        policy.save(tmp)
    run.logger.info("saved %s; held-out loss %.4f -> %.4f", final, first_eval, final_eval)
    run.finish()
    echo(f"sft: held-out loss {first_eval:.4f} -> {final_eval:.4f}")
    return SFTResult(run_dir=run.path, final_dir=final, steps=t.steps, eval_loss_start=first_eval,
                     eval_loss=final_eval, train_loss=train_loss, seconds=time.time() - started)
