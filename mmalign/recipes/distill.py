"""Recipe ``distill``: a student learns the teacher's next-token distributions.

    loss = (1 - w) * T^2 * mean_t KL(softmax(z_teacher/T) || softmax(z_student/T)) + w * CE(y_t)

over response tokens, where responses come from the dataset (``train.source: data``) or are
sampled from the teacher for each batch (``teacher``). Teacher and student must share a tokenizer
(the KL is over the teacher's vocabulary). Held-out KL(teacher || student) at T=1 is logged before,
during and after training. Run directory and checkpoints as for ``sft`` (the teacher's sampling
generator is checkpointed too, so ``--resume`` is exact with ``train.source: teacher``);
``final/`` is the student checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mmalign.config import to_yaml
from mmalign.config.schemas.distill import DistillConfig
from mmalign.data import load_prompts, load_sft
from mmalign.errors import ConfigError
from mmalign.models.finetune import Example, forward_kl, split_records, to_batch, tokenize_examples
from mmalign.models.loading import load_text_policy, resolve_checkpoint
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
class DistillResult:
    run_dir: Path
    final_dir: Path
    steps: int
    eval_kl_start: float
    eval_kl: float
    seconds: float


def check_same_tokenizer(teacher: TextPolicy, student: TextPolicy) -> int:
    """The shared vocabulary size; raise unless both tokenizers map the same strings to the same ids."""
    if teacher.vocabulary() != student.vocabulary():
        raise ConfigError("teacher.path: the teacher's tokenizer differs from the student's; distillation "
                          "compares distributions over one vocabulary, so both must use the same tokenizer")
    return student.vocab_size


def teacher_examples(teacher: TextPolicy, prompts: list[str], max_new_tokens: int,
                     generator: torch.Generator) -> list[Example]:
    """Responses sampled from the teacher (temperature 1), as token examples."""
    s = teacher.sample(prompts, 1, max_new_tokens=max_new_tokens, generator=generator)
    ids = [s.prompt_ids[r][s.prompt_mask[r].bool()].tolist() for r in range(len(prompts))]
    resp = [s.response_ids[r][s.response_mask[r].bool()].tolist() for r in range(len(prompts))]
    return [Example(prompt=p, prompt_ids=i, response_ids=r) for p, i, r in zip(prompts, ids, resp)]


def kl_loss(teacher: TextPolicy, student: TextPolicy, examples: list[Example], *, temperature: float,
            hard_weight: float, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, summed KL, token count) of a batch: KL on the teacher's logits, optional hard-label CE."""
    batch = to_batch(student, examples)
    with torch.no_grad():
        t_logits = teacher.logits(batch)
    s_logits = student.logits(batch)
    kl_sum, n = forward_kl(t_logits, s_logits, batch.response_mask, temperature, vocab)
    loss = kl_sum / n.clamp(min=1)
    if hard_weight:
        logp = s_logits.float().log_softmax(-1).gather(-1, batch.response_ids[..., None]).squeeze(-1)
        ce = -(logp * batch.response_mask).sum() / n.clamp(min=1)
        loss = (1 - hard_weight) * loss + hard_weight * ce
    return loss, kl_sum.detach(), n


@torch.no_grad()
def eval_kl(teacher: TextPolicy, student: TextPolicy, examples: list[Example], batch_size: int, vocab: int) -> float:
    """Mean per-token KL(teacher || student) at temperature 1 over held-out examples."""
    if not examples:
        return float("nan")
    was = student.training
    student.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        _, kl_sum, n = kl_loss(teacher, student, examples[i:i + batch_size], temperature=1.0, hard_weight=0.0,
                               vocab=vocab)
        total, count = total + float(kl_sum), count + int(n)
    student.train(was)
    return total / max(count, 1)


def distill_examples(cfg: DistillConfig, student: TextPolicy, teacher: TextPolicy, records: list, held_records: list,
                     gen: torch.Generator) -> tuple[list[Example], list[Example]]:
    """(training, held-out) examples: tokenised demonstrations (``train.source: data``), or none to
    train on (the teacher samples each step) and held-out responses sampled from the teacher."""
    t = cfg.train
    if t.source == "data":
        train = tokenize_examples(student, [r.prompt for r in records], [r.response for r in records],
                                  max_seq_len=t.max_seq_len, sources=[r.source for r in records])
        held = tokenize_examples(student, [r.prompt for r in held_records], [r.response for r in held_records],
                                 max_seq_len=t.max_seq_len, sources=[r.source for r in held_records])
        return train, held
    held = []
    for i in range(0, len(held_records), t.eval_batch_size):
        held += teacher_examples(teacher, [r.prompt for r in held_records[i:i + t.eval_batch_size]],
                                 t.max_new_tokens, gen)
    return [], held


def accumulate(cfg: DistillConfig, teacher: TextPolicy, student: TextPolicy, train: list[Example], prompts: list[str],
               step: int, gen: torch.Generator, vocab: int) -> tuple[float, float, int]:
    """The ``grad_accum`` micro-batches of ``step`` (demonstrations, or fresh teacher samples):
    gradients accumulate; returns (summed KL, mean loss, response tokens)."""
    t = cfg.train
    kl_total, loss_total, count = 0.0, 0.0, 0
    for micro in range(t.grad_accum):
        idx = batches.batch(len(prompts), t.batch_size, step * t.grad_accum + micro, cfg.run.seed)
        if t.source == "data":
            examples = [train[i] for i in idx]
        else:
            examples = teacher_examples(teacher, [prompts[i] for i in idx], t.max_new_tokens, gen)
        loss, kl_sum, n = kl_loss(teacher, student, examples, temperature=t.temperature,
                                  hard_weight=t.hard_weight, vocab=vocab)
        (loss / t.grad_accum).backward()
        kl_total, count = kl_total + float(kl_sum), count + int(n)
        loss_total += float(loss.detach()) / t.grad_accum
    return kl_total, loss_total, count


def start(run: RunDir, found: ckpt.Checkpoint | None, teacher: TextPolicy, student: TextPolicy, held: list[Example],
          eval_batch_size: int, vocab: int, state: dict) -> tuple[int, float]:
    """(first step, held-out KL before training): the checkpoint ``found`` loaded into ``state``
    (groups, optimizer, scheduler, generators) with the KL the run logged at step 0, or step 0 and
    that KL measured (and logged) now."""
    if found is None:
        first = eval_kl(teacher, student, held, eval_batch_size, vocab)
        run.log_metrics(0, eval_kl=first)
        return 0, first
    ckpt.restore_training(found, **state)
    return found.step, next((m["eval_kl"] for m in run.read_metrics() if "eval_kl" in m), float("nan"))


def run_distill(cfg: DistillConfig, *, overwrite: bool = False, resume: bool = False) -> DistillResult:
    started = time.time()
    seed_everything(cfg.run.seed)
    t = cfg.train
    loader = load_sft if t.source == "data" else load_prompts
    records, held_records = split_records(
        loader(cfg.data), loader(cfg.eval_data) if cfg.eval_data is not None else None, cfg.eval_fraction,
        cfg.run.seed)
    resolve_checkpoint(cfg.model.path)  # fail fast, before a run directory exists
    resolve_checkpoint(cfg.teacher.path, key="teacher.path")
    run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite, resume=resume)
    found = ckpt.resume_point(run)
    student = load_text_policy(cfg.model, run_device=cfg.run.device, run_dtype=cfg.run.dtype)
    teacher = load_text_policy(cfg.teacher, run_device=cfg.run.device, run_dtype=cfg.run.dtype, key="teacher")
    teacher.freeze()
    vocab = check_same_tokenizer(teacher, student)
    params = student.trainable_parameters()
    if not params:
        raise ConfigError("model: nothing to train (quantised weights train through LoRA: set model.lora.enabled)")

    gen = torch.Generator(device=teacher.device).manual_seed(cfg.run.seed)
    prompts = [r.prompt for r in records]
    train, held = distill_examples(cfg, student, teacher, records, held_records, gen)
    run.started()  # components loaded: only now is a run that --overwrite replaces deleted
    hint = lr_hint("train.lr", t.lr)
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = make_scheduler(opt, "constant", warmup_steps=t.warmup_steps, total_steps=t.steps)
    state = {"groups": {"student": params}, "optimizer": opt, "scheduler": sched, "generators": {"teacher": gen}}
    start_step, first = start(run, found, teacher, student, held, t.eval_batch_size, vocab, state)
    student.train()
    bar = progress(range(start_step, t.steps), desc="distill", total=t.steps, initial=start_step)
    for step in bar:
        kl_total, loss_total, count = accumulate(cfg, teacher, student, train, prompts, step, gen, vocab)
        clip_and_check("distill", step + 1, hint, params, t.max_grad_norm, loss_total)  # before the step
        lr = optimizer_step(opt, sched)
        done = step + 1
        metrics = {}
        if done % t.log_every == 0 or done == t.steps:
            metrics.update(train_kl=kl_total / max(count, 1), lr=lr, tokens=count)
        if held and ((t.eval_every and done % t.eval_every == 0) or done == t.steps):
            metrics["eval_kl"] = eval_kl(teacher, student, held, t.eval_batch_size, vocab)
            bar.set_postfix(eval_kl=f"{metrics['eval_kl']:.4f}")
        if metrics:
            run.log_metrics(done, **metrics)
        if t.save_every and done % t.save_every == 0 and done < t.steps:
            check_finite_weights("distill", done, hint, params)
            ckpt.save_training(run.checkpoints, done, keep=ckpt.DEFAULT_KEEP, **state)

    check_finite_weights("distill", t.steps, hint, params)
    last = eval_kl(teacher, student, held, t.eval_batch_size, vocab)
    final = run.path / "final"
    with atomic_directory(final, overwrite=True) as tmp:
        student.save(tmp)
    run.logger.info("saved %s; held-out KL %.4f -> %.4f", final, first, last)
    run.finish()
    echo(f"distill: held-out KL(teacher||student) {first:.4f} -> {last:.4f}")
    return DistillResult(run_dir=run.path, final_dir=final, steps=t.steps, eval_kl_start=first, eval_kl=last,
                         seconds=time.time() - started)
