r"""Recipe ``align``: CTRL -- calibrate, transform, KL-regularised RL -- and its baselines.

Read top to bottom:

1. **Calibration.** K reference rollouts per training prompt, scored by the reward, kept in a
   :class:`~mmalign.rl.calibration_store.CalibrationStore` (reused when the same reference policy and
   reward come back).
2. **RL loop.** Each step samples ``n`` continuations per prompt from the current policy, scores
   them, calibrates each reward against its prompt's reference rewards
   (:math:`c \in [0, 1]`), applies the transform :math:`\Phi` and trains on
   :math:`\Phi(c) - \beta\,\mathrm{KL}` with RLOO, group-normalised or GAE advantages and a clipped
   surrogate (:mod:`mmalign.rl.step`).
3. **Baselines** are switches of the same loop: ``transform.name: raw`` (standard RLHF on the raw
   reward), ``identity`` / ``exp`` / ``neg_exp`` (calibrated), and ``objective: bond`` (BOND:
   Jeffreys divergence toward the best-of-N distribution of the reference).

Runs unchanged under ``accelerate launch`` (each process takes its share of the step's prompts;
gradients are averaged by the prepared model; only the main process writes).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmalign.config import to_yaml
from mmalign.config.schemas.align import AlignConfig
from mmalign.errors import ConfigError, DataError, DivergenceError, RewardError, UserError
from mmalign.models.policy import Prompt
from mmalign.rl import checkpoint as ckpt
from mmalign.rl.kl import kl_per_token, make_kl_controller, token_kl
from mmalign.rl.step import (
    Rollout,
    UpdateSettings,
    advantages_for,
    gather_tokens,
    log_distributions,
    logprobs,
    update,
    values_of,
)
from mmalign.utils.device import resolve_device
from mmalign.utils.divergence import check_finite, check_finite_weights, lr_hint
from mmalign.utils.progress import echo, progress
from mmalign.utils.rundir import RunDir
from mmalign.utils.seed import seed_everything

TIMERS = ("generate", "reward", "logprob", "update")


# ---------------------------------------------------------------------------------------------
# components from config
# ---------------------------------------------------------------------------------------------
@dataclass
class Task:
    policy: Any  # a Policy
    reward: Any  # a Reward
    prompts: list[str | Prompt]
    policy_fingerprint: str  # identity of the reference policy (for the calibration store)


def _prompt_text(p: str | Prompt) -> str:
    return p.text if isinstance(p, Prompt) else str(p)


def _short(p: str | Prompt) -> str:
    text = " ".join(_prompt_text(p).split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


def build_task(cfg: AlignConfig, device: torch.device) -> Task:
    """The policy, reward and training prompts: a bandit, or a model + reward + dataset."""
    if cfg.bandit is not None:
        from mmalign.rl.bandit import BanditPolicy, TableReward

        b = cfg.bandit
        policy = BanditPolicy(b.prompts, b.vocab, torch.tensor(b.ref_logits), device)
        reward = TableReward(b.prompts, b.vocab, torch.tensor(b.rewards))
        fp = hashlib.sha256(json.dumps([b.prompts, b.vocab, b.ref_logits]).encode()).hexdigest()[:16]
        return Task(policy, reward, list(b.prompts), f"bandit:{fp}")
    from mmalign.data import load_prompts
    from mmalign.models.loading import load_policy
    from mmalign.rewards import build_reward

    records = load_prompts(cfg.data)
    if not records:
        raise DataError(f"{cfg.data.path}: no prompts")
    prompts: list[str | Prompt] = [Prompt(r.prompt, r.media) if r.media else r.prompt for r in records]
    reward = build_reward(cfg.reward)
    policy = load_policy(cfg.model, run_device=str(device), run_dtype=cfg.run.dtype)
    m = cfg.model
    fp = json.dumps({"path": str(Path(m.path).resolve()) if Path(m.path).is_dir() else m.path,
                     "tokenizer": m.tokenizer, "quantization": m.quantization, "chat_template": m.chat_template,
                     "dtype": m.dtype if m.dtype != "run" else cfg.run.dtype})
    return Task(policy, reward, prompts, hashlib.sha256(fp.encode()).hexdigest()[:16])


def choose_transform(cfg: AlignConfig):
    r"""The transform :math:`\Phi` (None for ``raw``) and the initial :math:`\beta`."""
    from mmalign.align.transforms import get_transform

    tr, beta = cfg.transform, cfg.kl.beta
    if cfg.objective == "bond":
        if beta is None:  # BOND's score (N-1) log c at beta is the log tilt at beta / (N-1)
            from mmalign.align.analytic import beta_for_kl

            beta = (tr.n - 1) * beta_for_kl(get_transform("log"), cfg.kl.target)
        return None, beta
    if tr.name == "raw":
        return None, beta
    if tr.name == "auto":
        from mmalign.align.analytic import robust_t

        tuned = robust_t(tr.procedure, tr.n, cfg.kl.target, tr.t_tolerance)
        return tuned.transform, beta if beta is not None else tuned.beta
    if tr.name == "optimal":
        from mmalign.align.analytic import optimal_transform

        phi = optimal_transform(tr.procedure, tr.n, cfg.kl.target)
    else:
        phi = get_transform(tr.name, t=tr.t, k=tr.k)
    if beta is None:
        from mmalign.align.analytic import beta_for_kl

        beta = beta_for_kl(phi, cfg.kl.target)
    return phi, beta


def score_rewards(reward, prompts: list[str | Prompt], responses: list[str], where: str) -> torch.Tensor:
    """Rewards as a finite float tensor; a NaN/inf (or a reward's own error) names the prompt."""
    media = [p.media for p in prompts if isinstance(p, Prompt)]
    try:
        r = reward([_prompt_text(p) for p in prompts], responses,
                   [p.media if isinstance(p, Prompt) else [] for p in prompts] if media else None)
    except RewardError as exc:  # names the row it failed on, or none: then the batch's first prompt
        i = exc.index if exc.index is not None and exc.index < len(prompts) else 0
        which = "prompt" if exc.index is not None else "the batch starts with prompt"
        raise DataError(f"{where}: {exc}; {which} {_short(prompts[i])}") from exc
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    r = torch.as_tensor(r, dtype=torch.float32).reshape(-1).cpu()
    bad = (~torch.isfinite(r)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise DataError(f"{where}: reward is {r[i].item()} for prompt {_short(prompts[i])} "
                        f"(response {responses[i][:40]!r})")
    return r


# ---------------------------------------------------------------------------------------------
# 1. calibration
# ---------------------------------------------------------------------------------------------
def calibrate_prompts(cfg: AlignConfig, task: Task, reference, store_path: Path, accelerator) -> list[torch.Tensor]:
    """K reference rewards per training prompt, from the store or freshly sampled and scored.

    Missing prompts are split across processes; the main process saves the store.
    """
    from accelerate.utils import gather_object

    from mmalign.rl.calibration_store import CalibrationStore

    c, ro = cfg.calibration, cfg.rollout
    max_new = c.max_new_tokens or ro.max_new_tokens
    sampling = {"max_new_tokens": max_new, "temperature": ro.temperature, "top_p": ro.top_p, "top_k": ro.top_k}
    store = CalibrationStore(store_path, reward_fingerprint=task.reward.fingerprint(),
                             policy_fingerprint=f"{task.policy_fingerprint}:{json.dumps(sampling, sort_keys=True)}")
    K = c.num_samples
    texts = [_prompt_text(p) for p in task.prompts]
    media = [p.media if isinstance(p, Prompt) else None for p in task.prompts]
    found = [store.get(t, m) for t, m in zip(texts, media)]
    missing = [i for i, f in enumerate(found) if f is None or f.numel() < K]
    mine = missing[accelerator.process_index::accelerator.num_processes]
    results: list[tuple[int, list[float]]] = []
    bar = progress(total=len(mine), desc="calibration") if accelerator.is_main_process else _NullBar()
    for start in range(0, len(mine), c.batch_prompts):
        idx = mine[start:start + c.batch_prompts]
        gen = torch.Generator().manual_seed(_seed(cfg.run.seed, "calibration", idx[0]))
        prompts = [task.prompts[i] for i in idx]
        samples = reference.sample(prompts, K, generator=gen, **sampling)
        rows = [prompts[i // K] for i in range(len(samples.texts))]
        r = score_rewards(task.reward, rows, samples.texts, "calibration")
        results += [(i, r[j * K:(j + 1) * K].tolist()) for j, i in enumerate(idx)]
        bar.update(len(idx))
    bar.close()
    if accelerator.num_processes > 1:
        results = gather_object(results)
    for i, values in results:
        found[i] = torch.tensor(values, dtype=torch.float64)
        store.put(texts[i], found[i], media[i])
    if missing and accelerator.is_main_process:
        store.save()
    return [f[:K] for f in found]  # type: ignore[index]


class _NullBar:
    """The progress bar of a non-main process."""

    def update(self, *_: Any) -> None: ...

    def set_postfix(self, **_: Any) -> None: ...

    def close(self) -> None: ...


PLOTTED = ("reward_raw", "reward_calibrated", "reward_transformed", "kl", "beta")


def _plot_run(run: RunDir, rows: list[dict]) -> None:
    """``plots/training.png``: reward, KL and beta over the steps."""
    from mmalign.evaluation.plots import plot_training_curves

    (run.path / "plots").mkdir(exist_ok=True)
    plot_training_curves(run.path / "plots" / "training.png", rows, PLOTTED, title=run.path.name)


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------
# helpers: data order, metrics, checkpoints
# ---------------------------------------------------------------------------------------------
def step_prompts(num_prompts: int, per_step: int, step: int, seed: int) -> list[int]:
    """Global prompt indices of ``step`` (1-based): consecutive slices of per-epoch permutations."""
    out = []
    for pos in range((step - 1) * per_step, step * per_step):
        epoch, i = divmod(pos, num_prompts)
        perm = torch.randperm(num_prompts, generator=torch.Generator().manual_seed(_seed(seed, "epoch", epoch)))
        out.append(int(perm[i]))
    return out


def _param_checksum(params: list[torch.nn.Parameter]) -> float:
    with torch.no_grad():
        return float(sum((p.double() * (1.0 + torch.arange(p.numel(), dtype=torch.float64, device=p.device)
                                        .reshape(p.shape).remainder(7))).sum() for p in params))


def _lr_lambda(cfg: AlignConfig):
    tr = cfg.train

    def f(step: int) -> float:
        if tr.warmup_steps and step < tr.warmup_steps:
            return (step + 1) / tr.warmup_steps
        if tr.schedule == "linear":
            return max(0.0, 1.0 - (step - tr.warmup_steps) / max(1, tr.steps - tr.warmup_steps))
        return 1.0

    return f


# ---------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------
def run_align(cfg: AlignConfig, *, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train; returns a summary dict. Writes ``<run.output_dir>/<run.name>/``."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=resolve_device(cfg.run.device).type == "cpu")
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.rollout.prompts_per_step % world:
        raise UserError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by the "
                        f"number of processes ({world})")

    # run directory (main process), then everyone agrees on the path
    run: RunDir | None = None
    if main:
        run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite, resume=resume)
    accelerator.wait_for_everyone()
    run_path = Path(cfg.run.output_dir) / cfg.run.name
    note = (run.logger.info if run is not None else (lambda *_: None))

    # components
    seed_everything(cfg.run.seed)
    task = build_task(cfg, accelerator.device)
    policy, reward = task.policy, task.reward
    reference = policy.reference()
    phi, beta0 = choose_transform(cfg)
    value_model = None
    if cfg.advantage.estimator == "gae":
        from mmalign.rl.value import CausalLMValue, TableValue

        value_model = (TableValue(len(task.prompts)) if cfg.bandit is not None
                       else CausalLMValue.from_pretrained(cfg.model.path)).to(accelerator.device)
    params = policy.trainable_parameters()
    if not params:
        raise UserError("the policy has no trainable parameters (a quantised model needs model.lora.enabled)")
    tr = cfg.train
    groups = [{"params": params, "lr": tr.lr}]
    if value_model is not None:
        groups.append({"params": list(value_model.parameters()), "lr": tr.value_lr or tr.lr})
    optimizer = torch.optim.AdamW(groups, lr=tr.lr, betas=tuple(tr.adam_betas), weight_decay=tr.weight_decay)
    if value_model is not None:
        train_model, optimizer, value_model = accelerator.prepare(policy.model, optimizer, value_model)
    else:
        train_model, optimizer = accelerator.prepare(policy.model, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                                                  _lr_lambda(cfg))
    beta0 = beta0 if beta0 is not None else 1.0
    try:
        kl_ctl = make_kl_controller(cfg.kl.controller, beta0, cfg.kl.target, cfg.kl.horizon, beta_min=cfg.kl.beta_min,
                                    beta_max=cfg.kl.beta_max, warmup=cfg.kl.warmup_steps)
    except ValueError as exc:
        raise ConfigError(f"kl.beta_min: {exc}") from None
    if main and cfg.kl.beta is None:
        note("beta %.4g solved for kl.target %.3g", beta0, cfg.kl.target)
    all_params = params + (list(accelerator.unwrap_model(value_model).parameters()) if value_model is not None else [])
    ckpt_groups = {"policy": params} | ({"value": all_params[len(params):]} if value_model is not None else {})

    # 1. calibration
    ref_rewards: list[torch.Tensor] | None = None
    if phi is not None or cfg.objective == "bond":
        store = Path(cfg.calibration.store) if cfg.calibration.store else run_path / "calibration.safetensors"
        t0 = time.perf_counter()
        ref_rewards = calibrate_prompts(cfg, task, reference, store, accelerator)
        note("calibration: %d prompts x K=%d in %.1fs", len(ref_rewards), cfg.calibration.num_samples,
             time.perf_counter() - t0)

    # resume from the newest valid checkpoint
    start = 0
    if run_path.joinpath("checkpoints").is_dir() and (run.resumed if run is not None else resume):
        def report(msg: str) -> None:
            if main:
                echo(f"mmalign: warning: {msg}")
                note(msg)

        found = ckpt.latest_valid(run_path / "checkpoints", report)
        if found is not None:
            ckpt.load_trainable(ckpt_groups, found.tensors())
            optimizer.load_state_dict(found.optimizer())
            state = found.trainer()
            scheduler.load_state_dict(state["scheduler"])
            kl_ctl.load_state_dict(state["kl_controller"])
            ckpt.restore_rng(found.rng())
            start = found.step
        if run is not None:
            run.truncate_metrics(start)
            note("resuming after step %d", start)

    settings = UpdateSettings(
        n=cfg.rollout.n, advantage=cfg.advantage.estimator, whiten=cfg.advantage.whiten, gamma=cfg.advantage.gamma,
        lam=cfg.advantage.lam, kl_estimator=cfg.kl.estimator, kl_mode=cfg.kl.mode, epochs=tr.epochs,
        minibatches=tr.minibatches, grad_accum=tr.grad_accum, clip=tr.clip, value_clip=tr.value_clip,
        vf_coef=tr.vf_coef, max_grad_norm=tr.max_grad_norm, loss_agg=tr.loss_agg, temperature=cfg.rollout.temperature,
        forward_weight=cfg.bond.forward_weight if cfg.objective == "bond" else 0.0)
    ro = cfg.rollout
    sampling = {"max_new_tokens": ro.max_new_tokens, "temperature": ro.temperature, "top_p": ro.top_p, "top_k": ro.top_k}
    local = ro.prompts_per_step // world
    K = cfg.calibration.num_samples
    last: dict[str, Any] = {}
    hint = lr_hint("train.lr", tr.lr)

    # 2. the RL loop
    bar = progress(total=tr.steps, initial=start, desc=cfg.run.name) if main else _NullBar()
    for step in range(start + 1, tr.steps + 1):
        timers = dict.fromkeys(TIMERS, 0.0)
        gen = torch.Generator().manual_seed(_seed(cfg.run.seed, "step", step, rank))
        idx = step_prompts(len(task.prompts), ro.prompts_per_step, step, cfg.run.seed)[rank * local:(rank + 1) * local]
        prompts = [task.prompts[i] for i in idx]
        where = f"step {step}"

        t = time.perf_counter()
        samples = policy.sample(prompts, ro.n, generator=gen, **sampling)
        rows = [prompts[i // ro.n] for i in range(len(samples.texts))]
        timers["generate"] += time.perf_counter() - t

        t = time.perf_counter()
        raw = score_rewards(reward, rows, samples.texts, where)
        calibrated = None
        if ref_rewards is not None:
            from mmalign.align.calibration import calibrate

            calibrated = torch.cat(calibrate([ref_rewards[i] for i in idx], list(raw.double().view(-1, ro.n)))).float()
        if cfg.objective == "bond":  # log pi_BoN/pi_ref = log N + (N-1) log c
            scores = (cfg.transform.n - 1) * torch.log(calibrated.clamp_min(0.5 / K))
        elif phi is None:
            scores = raw
        else:
            c_in = calibrated.clamp_min(0.5 / K) if phi.name == "log" else calibrated
            scores = torch.as_tensor(phi(c_in), dtype=torch.float32)
        timers["reward"] += time.perf_counter() - t
        sft = None
        if cfg.objective == "bond":  # forward-KL target: best-of-N samples of the reference
            t = time.perf_counter()
            bon = reference.sample(prompts, cfg.transform.n, generator=gen, **sampling)
            timers["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            bon_r = score_rewards(reward, [prompts[i // cfg.transform.n] for i in range(len(bon.texts))], bon.texts, where)
            best = bon_r.view(-1, cfg.transform.n).argmax(dim=1)
            sft = policy.encode(prompts, [bon.texts[i * cfg.transform.n + int(b)] for i, b in enumerate(best)])
            timers["reward"] += time.perf_counter() - t

        t = time.perf_counter()
        mask = samples.response_mask.float()
        # Without top-p/top-k the sampler's log-probs are those of the policy that sampled (the
        # policy tests check this to 1e-4): reuse them instead of another forward pass.
        exact = ro.top_p >= 1.0 and ro.top_k == 0 and samples.logprobs is not None
        old_logp = samples.logprobs.float() * mask if exact else logprobs(policy, samples, ro.temperature)
        values = values_of(value_model, samples) if value_model is not None else None
        ref_log_dist = None
        if cfg.kl.estimator == "full":  # exact per-token KL of the next-token distributions
            ref_log_dist = log_distributions(reference, samples, ro.temperature)
            ref_logp = gather_tokens(ref_log_dist, samples)
            kl = token_kl(log_distributions(policy, samples, ro.temperature), ref_log_dist) * mask
        else:
            ref_logp = logprobs(reference, samples, ro.temperature)
            kl = kl_per_token(old_logp, ref_logp, cfg.kl.estimator) * mask
        beta = kl_ctl.value
        dev = mask.device
        adv, returns = advantages_for(settings, scores.to(dev), kl, mask, beta, values)
        rollout = Rollout(batch=samples, mask=mask, old_logp=old_logp, ref_logp=ref_logp, kl=kl, advantages=adv,
                          old_values=values, returns=returns, ref_log_dist=ref_log_dist)
        timers["logprob"] += time.perf_counter() - t

        t = time.perf_counter()
        original = policy.model
        policy.model = train_model  # forward through the prepared (e.g. DDP) module so gradients sync
        try:
            stats = update(policy, rollout, settings, beta=beta, optimizer=optimizer, params=all_params,
                           accelerator=accelerator, sync_modules=(train_model,) + ((value_model,) if value_model else ()),
                           value_model=value_model, sft=sft, generator=gen)
        except FloatingPointError:  # raised before the optimizer step that would apply it
            raise DivergenceError("align", step, "gradient norm", None, hint) from None
        finally:
            policy.model = original
        scheduler.step()
        # before sampling from, or checkpointing, these weights (the final save included)
        check_finite("align", step, hint, loss=stats.get("pg_loss", 0.0))
        check_finite_weights("align", step, hint, all_params)
        timers["update"] += time.perf_counter() - t

        # metrics: averaged over processes; KL per sequence drives the controller
        seq_kl = kl.sum(dim=1)
        local_metrics = {
            "reward_raw": raw.mean(), "reward_calibrated": calibrated.mean() if calibrated is not None else float("nan"),
            "reward_transformed": scores.mean(), "kl": seq_kl.mean(), "entropy": -(old_logp * mask).sum() / mask.sum(),
            "response_length": mask.sum(dim=1).mean(), **{f"time_{k}": v for k, v in timers.items()}, **stats}
        keys = sorted(local_metrics)
        vec = torch.tensor([float(local_metrics[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
        vec = accelerator.reduce(vec, reduction="mean") if world > 1 else vec
        metrics = dict(zip(keys, vec.tolist()))
        kl_ctl.update(metrics["kl"], ro.prompts_per_step * ro.n)
        metrics.update(beta=beta, lr=scheduler.get_last_lr()[0])
        if tr.check_sync:
            sums = torch.tensor([_param_checksum(all_params)], dtype=torch.float64, device=accelerator.device)
            metrics["param_checksums"] = accelerator.gather(sums).tolist() if world > 1 else sums.tolist()
        if main:
            run.log_metrics(step, **{k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                                     for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))})
            bar.set_postfix(reward=f"{metrics['reward_raw']:.3f}", kl=f"{metrics['kl']:.3f}")
        bar.update(1)
        last = metrics

        # checkpoint
        if step % cfg.checkpoint.every == 0 or step == tr.steps:
            if main:
                ckpt.save_checkpoint(
                    run_path / "checkpoints", step, tensors=ckpt.trainable_tensors(ckpt_groups),
                    optimizer=optimizer.state_dict(), rng=ckpt.capture_rng(), keep=cfg.checkpoint.keep,
                    trainer={"data_position": step * ro.prompts_per_step, "kl_controller": kl_ctl.state_dict(),
                             "scheduler": scheduler.state_dict(), "world_size": world})
            accelerator.wait_for_everyone()
    bar.close()

    rows = run.read_metrics() if run is not None else []
    if main:
        policy.save(run_path / "final")
        _plot_run(run, rows)
        run.finish()
    accelerator.wait_for_everyone()
    from mmalign.evaluation.plots import tenths

    summary = {k: v for k in ("reward_raw", "reward_calibrated", "kl") if (v := tenths(rows, k)) is not None}
    return {"run_dir": str(run_path), "steps": tr.steps, "resumed_from": start, "metrics": last, "tenths": summary,
            "transform": phi.describe() if phi is not None else ("bond" if cfg.objective == "bond" else "raw"),
            "beta": kl_ctl.value}
