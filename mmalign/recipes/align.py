r"""Recipe ``align``: CTRL -- calibrate, transform, KL-regularised RL -- and its baselines.

:func:`run_align` reads top to bottom, one named step after another (CleanRL's ``ppo.py`` is the
model); each step is a short function below it or a component:

1. **calibrate** (:func:`calibration`): K reference rollouts per training prompt, scored by the
   reward, kept in a :class:`~mmalign.rl.calibration_store.CalibrationStore` (reused when the same
   reference policy and reward come back).
2. **rollout**: ``n`` continuations per prompt from the current policy.
3. **score** (:func:`mmalign.align.scores.score`): each reward calibrated against its prompt's
   reference rewards (:math:`c \in [0, 1]`) and transformed, :math:`\Phi(c)`; BOND's
   :math:`(N-1)\log c`; or the raw reward.
4. **advantages** (:func:`mmalign.rl.step.make_rollout`): log-probs, the KL to the reference and
   RLOO, group-normalised or GAE advantages of :math:`\Phi(c) - \beta\,\mathrm{KL}`.
5. **update** (:func:`train_step`): the clipped surrogate (:func:`mmalign.rl.step.update`) through
   the policy's accelerate-prepared module.
6. **log and checkpoint**: metrics averaged over processes, the KL controller, a checkpoint.

Baselines are switches of the same loop: ``transform.name: raw`` (standard RLHF on the raw
reward), ``identity`` / ``exp`` / ``neg_exp`` (calibrated), and ``objective: bond`` (BOND:
Jeffreys divergence toward the best-of-N distribution of the reference).

Runs unchanged under ``accelerate launch`` (each process takes its share of the step's prompts;
gradients are averaged by the prepared model; only the main process writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmalign.align import (
    beta_for_kl,
    beta_for_raw_reward,
    get_procedure,
    get_transform,
    optimal_transform,
    robust_t,
)
from mmalign.align.scores import Scores, score
from mmalign.config import to_yaml
from mmalign.config.schemas.align import AlignConfig
from mmalign.errors import ConfigError, DataError, DivergenceError, RewardError, UserError
from mmalign.models.policy import Prompt
from mmalign.rl.calibration_store import CalibrationStore
from mmalign.rl.kl import make_kl_controller
from mmalign.rl.step import Rollout, UpdateSettings, make_rollout, update
from mmalign.training import accelerate_setup, batches
from mmalign.training import checkpoint as ckpt
from mmalign.training import metrics as reduce
from mmalign.training.divergence import check_finite, check_finite_weights, lr_hint
from mmalign.training.schedule import make_scheduler
from mmalign.utils.device import resolve_device
from mmalign.utils.digest import weights_digest
from mmalign.utils.progress import echo, progress
from mmalign.utils.rundir import RunDir
from mmalign.utils.seed import seed_everything

if TYPE_CHECKING:
    from accelerate import Accelerator

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
    fp = json.dumps({"weights": _model_identity(m.path), "tokenizer": _model_identity(m.tokenizer) if m.tokenizer else "",
                     "quantization": m.quantization, "chat_template": m.chat_template,
                     "dtype": m.dtype if m.dtype != "run" else cfg.run.dtype})
    return Task(policy, reward, prompts, hashlib.sha256(fp.encode()).hexdigest()[:16])


def _model_identity(path: str) -> str:
    """What the reference is, for the calibration store: a local model's file contents (a moved
    copy matches, weights trained again in place do not), else the hub id as given."""
    return weights_digest(path) if Path(path).exists() else path


def choose_transform(cfg: AlignConfig):
    r"""The transform :math:`\Phi` (None for ``raw``) and the initial :math:`\beta`."""
    tr, beta = cfg.transform, cfg.kl.beta
    if cfg.objective == "bond":
        if beta is None:  # BOND's score (N-1) log c at beta is the log tilt at beta / (N-1)
            beta = (tr.n - 1) * beta_for_kl(get_transform("log"), cfg.kl.target)
        return None, beta
    if tr.name == "raw":  # beta None: scaled to the raw reward's spread once it is known (starting_beta)
        return None, beta
    if tr.name == "auto":
        tuned = robust_t(tr.procedure, tr.n, cfg.kl.target, tr.t_tolerance)
        return tuned.transform, beta if beta is not None else tuned.beta
    if tr.name == "optimal":
        phi = optimal_transform(tr.procedure, tr.n, cfg.kl.target)
    else:
        phi = get_transform(tr.name, t=tr.t, k=tr.k)
    if beta is None:
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
    results = reduce.gather_lists(accelerator, results)
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
# accelerate setup (the kernel's, with this recipe's settings)
# ---------------------------------------------------------------------------------------------
def make_accelerator(cfg: AlignConfig) -> Accelerator:
    """The run's Accelerator (:func:`mmalign.training.accelerate_setup.make_accelerator`): DDP of a
    multimodal policy looks for unused parameters (a step whose prompts lack a media kind gives
    that kind's projector no gradient); FSDP trains the full weights of one model policy only."""
    from mmalign.models.multimodal_loading import checkpoint_kind

    media = cfg.bandit is None and checkpoint_kind(cfg.model.path) != "text"
    model = cfg.model  # None for a bandit
    blockers = {"a bandit": cfg.bandit is not None, "LoRA": model is not None and model.lora.enabled,
                "quantisation": model is not None and model.quantization != "none",
                "advantage.estimator gae": cfg.advantage.estimator == "gae"}
    return accelerate_setup.make_accelerator(cpu=resolve_device(cfg.run.device).type == "cpu", find_unused_parameters=media,
                                             not_with_fsdp=[name for name, on in blockers.items() if on])


# ---------------------------------------------------------------------------------------------
# the steps of the loop
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _timed(timers: dict[str, float], key: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        timers[key] += time.perf_counter() - t


@dataclass
class Training:
    """What the update changes and the checkpoint keeps: optimiser, schedule, KL controller and
    the (prepared) value model."""

    optimizer: Any
    scheduler: Any
    kl_ctl: Any
    value_model: Any  # None unless advantage.estimator is gae
    params: list[torch.nn.Parameter]  # the policy's, then the value model's
    groups: dict[str, list[torch.nn.Parameter]]  # the checkpoint's tensor groups


def open_run(cfg: AlignConfig, accelerator, *, overwrite: bool, resume: bool) -> tuple[RunDir | None, Path]:
    """The run directory (opened and locked by the main process only) and its path."""
    run = None
    if accelerator.is_main_process:
        run = RunDir.open(cfg.run.output_dir, cfg.run.name, to_yaml(cfg), overwrite=overwrite, resume=resume)
    accelerator.wait_for_everyone()
    return run, Path(cfg.run.output_dir) / cfg.run.name


def build_training(cfg: AlignConfig, task: Task, accelerator, beta0: float, note) -> Training:
    """Value model (GAE), AdamW, the policy prepared for accelerate, LR schedule, KL controller."""
    value_model = None
    if cfg.advantage.estimator == "gae":
        from mmalign.rl.value import CausalLMValue, TableValue

        value_model = (TableValue(len(task.prompts)) if cfg.bandit is not None
                       else CausalLMValue.from_pretrained(cfg.model.path)).to(accelerator.device)
    params = task.policy.trainable_parameters()
    if not params:
        raise UserError("the policy has no trainable parameters (a quantised model needs model.lora.enabled)")
    tr = cfg.train
    groups = [{"params": params, "lr": tr.lr}]
    if value_model is not None:
        groups.append({"params": list(value_model.parameters()), "lr": tr.value_lr or tr.lr})
    optimizer = torch.optim.AdamW(groups, lr=tr.lr, betas=tuple(tr.adam_betas), eps=tr.adam_eps, weight_decay=tr.weight_decay)
    optimizer, *prepared = task.policy.prepare(accelerator, optimizer, *([value_model] if value_model is not None else []))
    value_model = prepared[0] if prepared else None
    params = task.policy.trainable_parameters()  # FSDP2 shards in place: the parameters are new (DTensor)
    scheduler = make_scheduler(getattr(optimizer, "optimizer", optimizer), tr.schedule, warmup_steps=tr.warmup_steps,
                               total_steps=tr.steps)
    try:
        kl_ctl = make_kl_controller(cfg.kl.controller, beta0, cfg.kl.target, cfg.kl.horizon, beta_min=cfg.kl.beta_min,
                                    beta_max=cfg.kl.beta_max, warmup=cfg.kl.warmup_steps)
    except ValueError as exc:
        raise ConfigError(f"kl.beta_min: {exc}") from None
    value_params = list(accelerator.unwrap_model(value_model).parameters()) if value_model is not None else []
    ckpt_groups = {"policy": params} | ({"value": value_params} if value_model is not None else {})
    return Training(optimizer, scheduler, kl_ctl, value_model, params + value_params, ckpt_groups)


def update_settings(cfg: AlignConfig) -> UpdateSettings:
    tr, adv = cfg.train, cfg.advantage
    return UpdateSettings(
        n=cfg.rollout.n, advantage=adv.estimator, whiten=adv.whiten, gamma=adv.gamma, lam=adv.lam,
        kl_estimator=cfg.kl.estimator, kl_mode=cfg.kl.mode, epochs=tr.epochs, minibatches=tr.minibatches,
        grad_accum=tr.grad_accum, clip=tr.clip, value_clip=tr.value_clip, vf_coef=tr.vf_coef,
        max_grad_norm=tr.max_grad_norm, loss_agg=tr.loss_agg, temperature=cfg.rollout.temperature,
        forward_weight=cfg.bond.forward_weight if cfg.objective == "bond" else 0.0)


def calibration(cfg: AlignConfig, task: Task, reference, run_path: Path, accelerator, note) -> list[torch.Tensor]:
    """Step 1: K reference rewards per training prompt (the store, or sampled and scored)."""
    store = Path(cfg.calibration.store) if cfg.calibration.store else run_path / "calibration.safetensors"
    t0 = time.perf_counter()
    ref_rewards = calibrate_prompts(cfg, task, reference, store, accelerator)
    note("calibration: %d prompts x K=%d in %.1fs", len(ref_rewards), cfg.calibration.num_samples,
         time.perf_counter() - t0)
    return ref_rewards


def starting_beta(cfg: AlignConfig, beta0: float | None, ref_rewards: list[torch.Tensor] | None, note) -> float:
    """The KL controller's initial beta: ``beta0`` from :func:`choose_transform` (logged when solved
    for ``kl.target``), or for the raw reward with ``kl.beta: null`` the identity tilt's beta at
    ``kl.target`` scaled to the raw reward's spread under the reference
    (:func:`mmalign.align.beta_for_raw_reward`)."""
    if beta0 is not None:
        if cfg.kl.beta is None:
            note("beta %.4g solved for kl.target %.3g", beta0, cfg.kl.target)
        return beta0
    spread = float(torch.stack([r.double().std(unbiased=False) for r in ref_rewards]).mean())
    beta = beta_for_raw_reward(spread, cfg.kl.target)
    note("beta %.4g: the identity tilt's beta at kl.target %.3g scaled to the raw reward's spread %.4g",
         beta, cfg.kl.target, spread)
    return beta


def resume_from_checkpoint(run: RunDir | None, run_path: Path, training: Training, resume: bool, note) -> int:
    """Restore the newest valid checkpoint of a resumed run; returns the step it ends (0: none)."""
    if not (run_path.joinpath("checkpoints").is_dir() and (run.resumed if run is not None else resume)):
        return 0

    def report(msg: str) -> None:
        if run is not None:
            echo(f"mmalign: warning: {msg}")
            note(msg)

    start = 0
    found = ckpt.latest_valid(run_path / "checkpoints", report)
    if found is not None:
        state = ckpt.restore_training(found, groups=training.groups, optimizer=training.optimizer,
                                      scheduler=training.scheduler)  # FSDP2: every process keeps its shards
        training.kl_ctl.load_state_dict(state["kl_controller"])
        start = found.step
    if run is not None:
        run.truncate_metrics(start)
        note("resuming after step %d", start)
    return start


def bond_targets(task: Task, reference, prompts: list, n: int, gen, sampling: dict, where: str,
                 timers: dict[str, float]):
    """BOND's forward-KL target: the best of ``n`` reference samples per prompt, as a batch."""
    with _timed(timers, "generate"):
        bon = reference.sample(prompts, n, generator=gen, **sampling)
    with _timed(timers, "reward"):
        r = score_rewards(task.reward, [prompts[i // n] for i in range(len(bon.texts))], bon.texts, where)
        best = get_procedure("bon", n).select(r.view(-1, n))
        return task.policy.encode(prompts, [bon.texts[i * n + int(b)] for i, b in enumerate(best)])


def train_step(policy, rollout: Rollout, settings: UpdateSettings, training: Training, accelerator, *, beta: float,
               sft, gen, step: int, hint: str) -> dict[str, float]:
    """Step 5: the clipped policy-gradient epochs through the prepared (e.g. DDP) module, then the
    schedule; stops with a DivergenceError before non-finite weights are sampled or saved."""
    value_model = training.value_model
    with policy.through_prepared() as module:
        try:
            stats = update(policy, rollout, settings, beta=beta, optimizer=training.optimizer, params=training.params,
                           accelerator=accelerator, sync_modules=(module,) + ((value_model,) if value_model is not None else ()),
                           value_model=value_model, sft=sft, generator=gen)
        except FloatingPointError:  # raised before the optimizer step that would apply it
            raise DivergenceError("align", step, "gradient norm", None, hint) from None
    training.scheduler.step()
    check_finite("align", step, hint, loss=stats.get("pg_loss", 0.0))
    check_finite_weights("align", step, hint, training.params)
    return stats


def step_metrics(cfg: AlignConfig, accelerator, training: Training, raw: torch.Tensor, scored: Scores,
                 rollout: Rollout, timers: dict[str, float], stats: dict[str, float], beta: float) -> dict[str, Any]:
    """The step's metrics, averaged over processes (``kl``: per sequence, what drives the controller)."""
    mask, calibrated = rollout.mask, scored.calibrated
    local = {
        "reward_raw": raw.mean(), "reward_calibrated": calibrated.mean() if calibrated is not None else float("nan"),
        "reward_transformed": scored.scores.mean(), "kl": rollout.kl.sum(dim=1).mean(),
        "entropy": -(rollout.old_logp * mask).sum() / mask.sum(), "response_length": mask.sum(dim=1).mean(),
        **{f"time_{k}": v for k, v in timers.items()}, **stats}
    metrics: dict[str, Any] = reduce.mean_over_processes(accelerator, local)
    metrics.update(beta=beta, lr=training.scheduler.get_last_lr()[0])
    if cfg.train.check_sync:  # one checksum per process: equal while the replicas are in sync
        metrics["param_checksums"] = reduce.checksums_per_process(accelerator, training.params)
    return metrics


def log_step(run: RunDir | None, bar, step: int, metrics: dict[str, Any]) -> None:
    """One line of metrics.jsonl (6 decimals; NaN left out) and the progress bar."""
    if run is not None:
        run.log_metrics(step, **{k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                                 for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))})
        bar.set_postfix(reward=f"{metrics['reward_raw']:.3f}", kl=f"{metrics['kl']:.3f}")
    bar.update(1)


def save_step(cfg: AlignConfig, run_path: Path, accelerator, training: Training, step: int) -> None:
    """A checkpoint (main process): trainable tensors, optimiser, RNG, schedule and controller."""
    groups, optimizer = ckpt.full_state(training.groups, training.optimizer)  # FSDP2: gathered by every process
    if accelerator.is_main_process:
        ckpt.save_training(
            run_path / "checkpoints", step, groups=groups, optimizer=optimizer,
            scheduler=training.scheduler, keep=cfg.checkpoint.keep,
            trainer={"data_position": step * cfg.rollout.prompts_per_step, "kl_controller": training.kl_ctl.state_dict(),
                     "world_size": accelerator.num_processes})
    accelerator.wait_for_everyone()


def finish(cfg: AlignConfig, run: RunDir | None, run_path: Path, policy, accelerator, *, start: int,
           last: dict[str, Any], phi, beta: float) -> dict[str, Any]:
    """The final policy, plots and DONE (main process); the summary the CLI prints."""
    from mmalign.evaluation.plots import tenths

    rows = run.read_metrics() if run is not None else []
    if run is not None or accelerate_setup.saving_is_collective(accelerator):  # FSDP2: all gather, main writes
        policy.save(run_path / "final")
    if run is not None:
        _plot_run(run, rows)
        run.finish()
    accelerator.wait_for_everyone()
    summary = {k: v for k in ("reward_raw", "reward_calibrated", "kl") if (v := tenths(rows, k)) is not None}
    return {"run_dir": str(run_path), "steps": cfg.train.steps, "resumed_from": start, "metrics": last,
            "tenths": summary, "beta": beta,
            "transform": phi.describe() if phi is not None else ("bond" if cfg.objective == "bond" else "raw")}


# ---------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------
def run_align(cfg: AlignConfig, *, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train; returns a summary dict. Writes ``<run.output_dir>/<run.name>/``."""
    accelerator = make_accelerator(cfg)
    world, rank = accelerator.num_processes, accelerator.process_index
    ro, tr = cfg.rollout, cfg.train
    if ro.prompts_per_step % world:
        raise UserError(f"rollout.prompts_per_step ({ro.prompts_per_step}) must be divisible by the "
                        f"number of processes ({world})")
    run, run_path = open_run(cfg, accelerator, overwrite=overwrite, resume=resume)
    note = run.logger.info if run is not None else (lambda *_: None)

    # components
    seed_everything(cfg.run.seed)
    task = build_task(cfg, accelerate_setup.run_device(accelerator))
    policy, reference = task.policy, task.policy.reference()
    phi, beta0 = choose_transform(cfg)
    bond_n = cfg.transform.n if cfg.objective == "bond" else None
    # 1. calibrate: K reference rewards per prompt (the raw reward needs them only to scale beta)
    calibrated = phi is not None or bond_n is not None
    ref_rewards = calibration(cfg, task, reference, run_path, accelerator, note) if calibrated or beta0 is None else None
    beta0 = starting_beta(cfg, beta0, ref_rewards, note)
    ref_rewards = ref_rewards if calibrated else None
    training = build_training(cfg, task, accelerator, beta0, note)
    settings = update_settings(cfg)
    start = resume_from_checkpoint(run, run_path, training, resume, note)

    sampling = {"max_new_tokens": ro.max_new_tokens, "temperature": ro.temperature, "top_p": ro.top_p, "top_k": ro.top_k}
    sampler_is_policy = ro.top_p >= 1.0 and ro.top_k == 0
    keep = sampler_is_policy and settings.kl_estimator == "full"  # reuse the sampler's distributions
    local = ro.prompts_per_step // world
    hint = lr_hint("train.lr", tr.lr)
    last: dict[str, Any] = {}
    bar = progress(total=tr.steps, initial=start, desc=cfg.run.name) if run is not None else _NullBar()
    for step in range(start + 1, tr.steps + 1):
        timers = dict.fromkeys(TIMERS, 0.0)
        gen = torch.Generator().manual_seed(_seed(cfg.run.seed, "step", step, rank))
        idx = batches.batch(len(task.prompts), ro.prompts_per_step, step - 1, cfg.run.seed)[rank * local:(rank + 1) * local]
        prompts = [task.prompts[i] for i in idx]

        # 2. rollout: n continuations per prompt from the current policy
        with _timed(timers, "generate"):
            samples = policy.sample(prompts, ro.n, generator=gen, keep_distributions=keep, **sampling)

        # 3. score: raw reward -> calibrated c -> Phi(c), or BOND's (N-1) log c
        with _timed(timers, "reward"):
            rows = [prompts[i // ro.n] for i in range(len(samples.texts))]
            raw = score_rewards(task.reward, rows, samples.texts, f"step {step}")
            refs = [ref_rewards[i] for i in idx] if ref_rewards is not None else None
            scored = score(raw, refs, ro.n, transform=phi, bond_n=bond_n)
        sft = bond_targets(task, reference, prompts, bond_n, gen, sampling, f"step {step}", timers) if bond_n else None

        # 4. advantages: log-probs, KL to the reference, the advantage estimator
        beta = training.kl_ctl.value
        with _timed(timers, "logprob"):
            rollout = make_rollout(policy, reference, samples, scored.scores, settings, beta=beta,
                                   value_model=training.value_model, sampler_is_policy=sampler_is_policy)

        # 5. update
        with _timed(timers, "update"):
            stats = train_step(policy, rollout, settings, training, accelerator, beta=beta, sft=sft, gen=gen,
                               step=step, hint=hint)

        # 6. log (the KL per sequence drives the controller) and checkpoint
        last = step_metrics(cfg, accelerator, training, raw, scored, rollout, timers, stats, beta)
        training.kl_ctl.update(last["kl"], ro.prompts_per_step * ro.n)
        log_step(run, bar, step, last)
        if step % cfg.checkpoint.every == 0 or step == tr.steps:
            save_step(cfg, run_path, accelerator, training, step)
    bar.close()
    return finish(cfg, run, run_path, policy, accelerator, start=start, last=last, phi=phi, beta=training.kl_ctl.value)
