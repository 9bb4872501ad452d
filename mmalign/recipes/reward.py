"""Recipe ``reward``: train a Bradley-Terry reward model on preference pairs.

    loss = -log sigmoid(r(x, y_chosen) - r(x, y_rejected))

The model is ``AutoModelForSequenceClassification`` with one label, started from a checkpoint
(a causal LM gets a fresh scalar head) or from a toy-width Llama with a tokenizer trained on the
data. Held-out pairwise accuracy is logged every ``train.eval_every`` steps. The result,
``<run>/final/``, is a Hugging Face folder (safetensors + tokenizer + ``mmalign_reward.json``)
that ``reward: {kind: hf_classifier, path: <run>/final}`` loads.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmalign.config import to_yaml
from mmalign.config.schemas.reward_train import RewardRecipeConfig
from mmalign.data import PreferenceRecord, load_preferences
from mmalign.errors import ConfigError
from mmalign.rewards.hf_classifier import META_FILE, format_pairs, prepare_tokenizer, resolve_format
from mmalign.utils.atomic import atomic_directory, atomic_write_text
from mmalign.utils.device import resolve_device, resolve_dtype
from mmalign.utils.divergence import check_finite, check_finite_weights, lr_hint
from mmalign.utils.io_errors import check_model_dir, check_tokenizer_dir, reading
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


def build_model(cfg: RewardRecipeConfig, pairs: list[PreferenceRecord], dtype: torch.dtype,
                path: str | None = None) -> tuple[Any, Any]:
    """A one-label sequence classifier and its tokenizer (``path`` overrides ``model.path``)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    m = cfg.model
    path = path or m.path
    revision = m.revision if path == m.path else None
    if path:
        check_model_dir(path, "model.path")
        with reading(path, "model.path", what="model config", broad=True):
            config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=m.trust_remote_code)
        check_tokenizer_dir(path, "model.path")
        with reading(path, "model.path", what="tokenizer", broad=True):
            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=m.trust_remote_code)
        prepare_tokenizer(tokenizer)
        config.num_labels = 1
        config.pad_token_id = tokenizer.pad_token_id
        with reading(path, "model.path", what="model", broad=True):
            model = AutoModelForSequenceClassification.from_pretrained(
                path, config=config, revision=revision, dtype=dtype, trust_remote_code=m.trust_remote_code)
        return model, tokenizer
    from transformers import LlamaForSequenceClassification

    from mmalign.models.toy import tiny_llama_config, train_bpe_tokenizer

    t = m.toy
    texts = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    tokenizer = prepare_tokenizer(train_bpe_tokenizer(texts, vocab_size=t.vocab_size))
    config = tiny_llama_config(len(tokenizer), hidden_size=t.hidden_size, num_layers=t.num_layers,
                               num_heads=t.num_heads, num_kv_heads=t.num_kv_heads, max_position=t.max_position,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id)
    config.num_labels = 1
    model = LlamaForSequenceClassification(config).to(dtype)
    return model, tokenizer


class PairScorer:
    """Formats and tokenises pairs, returns (r_chosen, r_rejected)."""

    def __init__(self, model: Any, tokenizer: Any, fmt: str, separator: str, max_length: int, device: torch.device):
        self.model, self.tokenizer, self.fmt, self.sep = model, tokenizer, fmt, separator
        self.max_length, self.device = max_length, device

    def __call__(self, pairs: list[PreferenceRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [p.prompt for p in pairs] * 2
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        texts = format_pairs(self.tokenizer, prompts, responses, self.fmt, self.sep)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", add_special_tokens=self.fmt != "chat")
        logits = self.model(input_ids=enc["input_ids"].to(self.device),
                            attention_mask=enc["attention_mask"].to(self.device)).logits[:, 0].float()
        return logits[:len(pairs)], logits[len(pairs):]


@torch.no_grad()
def evaluate(scorer: PairScorer, pairs: list[PreferenceRecord], batch_size: int) -> dict[str, float]:
    """Held-out pairwise accuracy (ties count half), mean BT loss and mean margin."""
    scorer.model.eval()
    correct, loss, margin = 0.0, 0.0, 0.0
    for i in range(0, len(pairs), batch_size):
        rc, rr = scorer(pairs[i:i + batch_size])
        d = rc - rr
        correct += float((d > 0).sum() + 0.5 * (d == 0).sum())
        loss += float(-F.logsigmoid(d).sum())
        margin += float(d.sum())
    scorer.model.train()
    n = len(pairs)
    return {"eval_accuracy": correct / n, "eval_loss": loss / n, "eval_margin": margin / n}


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
    last = rundir.checkpoints / "last"
    start_step = 0
    resuming = rundir.resumed and (last / "trainer_state.pt").is_file()
    model, tokenizer = build_model(cfg, train_pairs, dtype, path=str(last) if resuming else None)
    model.to(device).train()
    fmt, saved_sep = resolve_format(cfg.model.format, tokenizer, cfg.model.path or None)
    sep = saved_sep if saved_sep is not None and cfg.model.format == "auto" else cfg.model.separator
    scorer = PairScorer(model, tokenizer, fmt, sep, cfg.train.max_length, device)
    tc = cfg.train
    optim = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(train_pairs) / tc.batch_size)
    total = steps_per_epoch * tc.epochs if tc.max_steps is None else min(tc.max_steps, steps_per_epoch * tc.epochs)

    def lr_factor(s: int) -> float:
        """Linear warmup, then cosine decay to 10% of ``lr`` at the last step."""
        if s < tc.warmup_steps:
            return (s + 1) / tc.warmup_steps
        frac = (s - tc.warmup_steps) / max(1, total - tc.warmup_steps)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_factor)
    if resuming:  # after creating the scheduler, which resets the optimizer's lr
        state = torch.load(last / "trainer_state.pt", weights_only=True)
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
        rundir.truncate_metrics(start_step)
        log.info("resumed from step %d", start_step)
    log.info("pairs: %d train, %d held out; %d steps; format=%s; params=%d", len(train_pairs), len(eval_pairs),
             total, fmt, sum(p.numel() for p in model.parameters()))
    rundir.started()  # components loaded: only now is a run that --overwrite replaces deleted
    hint = lr_hint("train.lr", tc.lr)

    def batch_at(step: int) -> list[PreferenceRecord]:
        """Step ``step``'s pairs: a fixed shuffle per epoch, so a resumed run sees the same data."""
        epoch, offset = divmod(step, steps_per_epoch)
        order = list(range(len(train_pairs)))
        random.Random(cfg.run.seed * 1000003 + epoch).shuffle(order)
        return [train_pairs[i] for i in order[offset * tc.batch_size:(offset + 1) * tc.batch_size]]

    metrics: dict[str, float] = {}
    step = start_step
    deadline = t0 + 60 * tc.max_minutes if tc.max_minutes else None
    bar = progress(total=total, desc="reward", initial=start_step)
    while step < total and (deadline is None or time.monotonic() < deadline):
        rc, rr = scorer(batch_at(step))
        loss = -F.logsigmoid(rc - rr).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        check_finite("reward", step + 1, hint, loss=loss.detach(), gradient_norm=gnorm)  # before the step
        optim.step()
        sched.step()
        bar.update(1)
        done = step + 1
        if done % tc.log_every == 0:
            rundir.log_metrics(done, loss=float(loss.detach()), train_accuracy=float((rc.detach() > rr.detach()).float().mean()),
                               grad_norm=float(gnorm), lr=sched.get_last_lr()[0])
        if done % tc.eval_every == 0:
            metrics = evaluate(scorer, eval_pairs, tc.eval_batch_size)
            rundir.log_metrics(done, **metrics)
            log.info("step %d: %s", done, json.dumps(metrics))
            bar.set_postfix(acc=f"{metrics['eval_accuracy']:.3f}")
        if done % tc.save_every == 0:
            check_finite_weights("reward", done, hint, model.parameters())
            _save_checkpoint(last, model, tokenizer, optim, sched, done)
        step = done
    bar.close()
    check_finite_weights("reward", step, hint, model.parameters())
    if not metrics or step % tc.eval_every:
        metrics = evaluate(scorer, eval_pairs, tc.eval_batch_size)
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


def save_reward_model(out: Path, model: Any, tokenizer: Any, fmt: str, separator: str, max_length: int) -> None:
    """A Hugging Face folder ``hf_classifier`` loads, with the formatting it was trained on."""
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {"format": fmt, "separator": separator, "max_length": max_length, "objective": "bradley_terry"}
    atomic_write_text(Path(out) / META_FILE, json.dumps(meta, indent=2) + "\n")


def _save_checkpoint(path: Path, model: Any, tokenizer: Any, optim: torch.optim.Optimizer, sched: Any,
                     step: int) -> None:
    with atomic_directory(path, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "step": step}, tmp / "trainer_state.pt")
