r"""One CTRL update, CleanRL style: log-probs, KL, advantages and the clipped policy update are
all here, in the order they happen.

With per-token KL estimates :math:`k_t` (:mod:`mmalign.rl.kl`) and transformed calibrated scores
:math:`s = \Phi(c)`, the trained objective is

.. math:: J(\pi) = E_{x, y\sim\pi}\big[\Phi(c(x,y))\big] - \beta\, E\Big[\textstyle\sum_t k_t\Big],

whose optimum over all policies is :math:`\pi^* \propto \pi_{ref}\, e^{\Phi(c)/\beta}`. With
``kl_mode="reward"`` the penalty enters the return (RLOO / group_norm use the sequence score
:math:`\Phi - \beta\sum_t k_t`; GAE gets :math:`-\beta k_t` per token and :math:`\Phi` at the last
token); with ``kl_mode="loss"`` it is added to the loss as :math:`\beta\,\mathrm{agg}(k_t)` with the
current, differentiable log-probs.

With ``kl_estimator="full"`` the per-token penalty is the exact KL of the next-token
distributions at each visited state, :math:`\kappa_t` (:func:`mmalign.rl.kl.token_kl`), and
the loss adds :math:`\beta\,\mathrm{agg}(\kappa_t)` with the current distributions. In the reward
modes the penalty in the return is the score-function part of the sequence KL's gradient and the
loss term its direct part (the gradient through :math:`\kappa_t` at fixed states), so together
they are its exact gradient, with less noise than sampled log-ratios; in ``kl_mode="loss"`` only
the direct part acts.

``kl_mode="reward_to_go"`` (RLOO only) charges token :math:`t` only the penalty it can still
change, :math:`\beta\sum_{s\ge t} k_s`, each position with its own leave-one-out baseline:

.. math:: A_{i,t} = \mathrm{RLOO}(\Phi)_i - \mathrm{RLOO}_t\Big(\beta \textstyle\sum_{s\ge t} k_{\cdot,s}\Big)_i .

The dropped part :math:`\beta\sum_{s<t} k_s` is fixed by the history before token :math:`t`, so
the gradient's expectation is unchanged (the same objective and optimum) and its variance is lower.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mmalign.models.policy import SequenceBatch
from mmalign.rl.advantages import gae, group_norm, rloo, whiten
from mmalign.rl.kl import kl_per_token, token_kl
from mmalign.rl.losses import aggregate, clipped_surrogate, clipped_value_loss


@dataclass
class UpdateSettings:
    n: int  # samples per prompt (rows are prompt-major)
    advantage: str = "rloo"
    whiten: bool = False
    gamma: float = 1.0
    lam: float = 0.95
    kl_estimator: str = "k1"
    kl_mode: str = "reward"
    epochs: int = 1
    minibatches: int = 1
    grad_accum: int = 1
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    max_grad_norm: float = 1.0  # 0: no clipping
    loss_agg: str = "seq_sum"
    temperature: float = 1.0
    forward_weight: float = 0.0  # BOND: weight of the forward-KL (SFT on best-of-N) term


@dataclass
class Rollout:
    """Everything the update needs about one batch of sampled rows (all detached)."""

    batch: SequenceBatch
    mask: torch.Tensor  # [R, T] float
    old_logp: torch.Tensor  # [R, T] under the policy that sampled
    ref_logp: torch.Tensor  # [R, T] under the reference
    kl: torch.Tensor  # [R, T] per-token KL estimate
    advantages: torch.Tensor  # [R, T]
    old_values: torch.Tensor | None = None  # [R, T] (GAE only)
    returns: torch.Tensor | None = None  # [R, T] (GAE only)
    ref_log_dist: torch.Tensor | None = None  # [R, T, V] reference log-distributions (kl estimator "full")


def select_rows(batch: SequenceBatch, idx: torch.Tensor) -> SequenceBatch:
    """The rows ``idx`` of ``batch`` (prompts list kept whole; ``prompt_index`` still points into it)."""
    idx = idx.to(batch.response_ids.device)
    return SequenceBatch(prompt_ids=batch.prompt_ids[idx], prompt_mask=batch.prompt_mask[idx],
                         response_ids=batch.response_ids[idx], response_mask=batch.response_mask[idx],
                         prompt_index=batch.prompt_index[idx], prompts=batch.prompts)


@torch.no_grad()
def logprobs(policy, batch: SequenceBatch, temperature: float = 1.0, chunk: int = 64) -> torch.Tensor:
    """Per-token log-probs of ``batch`` under ``policy`` without gradients, in chunks of rows."""
    rows = batch.response_ids.shape[0]
    parts = [policy.score(select_rows(batch, torch.arange(i, min(i + chunk, rows))), temperature=temperature)
             for i in range(0, rows, chunk)]
    return torch.cat(parts).float()


def response_log_dist(policy, batch: SequenceBatch, temperature: float = 1.0) -> torch.Tensor:
    """Next-token log-distributions [R, T, V] at the response positions (differentiable)."""
    return (policy.logits(batch).float() / temperature).log_softmax(-1)


@torch.no_grad()
def log_distributions(policy, batch: SequenceBatch, temperature: float = 1.0, chunk: int = 32) -> torch.Tensor:
    """:func:`response_log_dist` without gradients, in chunks of rows."""
    rows = batch.response_ids.shape[0]
    return torch.cat([response_log_dist(policy, select_rows(batch, torch.arange(i, min(i + chunk, rows))), temperature)
                      for i in range(0, rows, chunk)])


def gather_tokens(log_dist: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """Log-probs [R, T] of the batch's response tokens under ``log_dist`` (0 on padding)."""
    ids = batch.response_ids.to(log_dist.device)
    return log_dist.gather(-1, ids[..., None]).squeeze(-1) * batch.response_mask.to(log_dist.device)


@torch.no_grad()
def values_of(value_model, batch: SequenceBatch, chunk: int = 64) -> torch.Tensor:
    rows = batch.response_ids.shape[0]
    return torch.cat([value_model(select_rows(batch, torch.arange(i, min(i + chunk, rows))))
                      for i in range(0, rows, chunk)]).float()


def advantages_for(s: UpdateSettings, scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float,
                   values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Advantages ``[R, T]`` (and returns for GAE) from scores ``[R]`` and per-token KL ``[R, T]``."""
    penalty = beta * kl * mask if s.kl_mode in ("reward", "reward_to_go") else torch.zeros_like(kl)
    returns = None
    if s.kl_mode == "reward_to_go" and s.advantage == "rloo":
        to_go = penalty.flip(1).cumsum(dim=1).flip(1)
        adv = (rloo(scores, s.n).unsqueeze(1) - rloo(to_go, s.n)) * mask
    elif s.kl_mode == "reward_to_go" and s.advantage == "group_norm":
        raise ValueError("kl.mode 'reward_to_go' needs advantage.estimator rloo or gae")
    elif s.advantage in ("rloo", "group_norm"):
        seq = scores - penalty.sum(dim=1)
        a = rloo(seq, s.n) if s.advantage == "rloo" else group_norm(seq, s.n)
        adv = a.unsqueeze(1) * mask
    elif s.advantage == "gae":
        if values is None:
            raise ValueError("GAE needs values")
        rewards = -penalty
        last = (mask.sum(dim=1).long() - 1).clamp_min(0)
        rewards = rewards.scatter_add(1, last.unsqueeze(1), scores.unsqueeze(1).to(rewards.dtype))
        adv, returns = gae(rewards, values, mask, s.gamma, s.lam)
    else:
        raise ValueError(f"unknown advantage estimator '{s.advantage}'")
    if s.whiten:
        adv = whiten(adv, mask)
    return adv, returns


def make_rollout(policy, reference, samples, scores: torch.Tensor, s: UpdateSettings, *, beta: float,
                 value_model=None, sampler_is_policy: bool = False) -> Rollout:
    """One batch of samples made ready for :func:`update`: log-probs under the policy and the
    reference, the per-token KL (``s.kl_estimator``; ``full``: the exact KL of the next-token
    distributions), the values (GAE) and the advantages of ``scores`` [R] at ``beta``.

    ``sampler_is_policy`` (no top-p / top-k truncation): the sampler's log-probs are the policy's
    (the policy tests check this to 1e-4), so they are reused instead of another forward pass, and
    so are its whole distributions when it kept them (``sample(keep_distributions=True)``).
    """
    mask = samples.response_mask.float()
    reuse = sampler_is_policy and samples.logprobs is not None
    full = s.kl_estimator == "full"
    policy_log_dist = None
    if full:
        kept = samples.distributions if sampler_is_policy else None
        policy_log_dist = kept.float() if kept is not None else log_distributions(policy, samples, s.temperature)
    if reuse:
        old_logp = samples.logprobs.float() * mask
    else:
        old_logp = gather_tokens(policy_log_dist, samples) if full else logprobs(policy, samples, s.temperature)
    values = values_of(value_model, samples) if value_model is not None else None
    ref_log_dist = None
    if full:
        ref_log_dist = log_distributions(reference, samples, s.temperature)
        ref_logp = gather_tokens(ref_log_dist, samples)
        kl = token_kl(policy_log_dist, ref_log_dist) * mask
    else:
        ref_logp = logprobs(reference, samples, s.temperature)
        kl = kl_per_token(old_logp, ref_logp, s.kl_estimator) * mask
    adv, returns = advantages_for(s, scores.to(mask.device), kl, mask, beta, values)
    return Rollout(batch=samples, mask=mask, old_logp=old_logp, ref_logp=ref_logp, kl=kl, advantages=adv,
                   old_values=values, returns=returns, ref_log_dist=ref_log_dist)


def _no_sync(accelerator, modules, skip: bool):
    stack = contextlib.ExitStack()
    if skip and accelerator is not None and accelerator.num_processes > 1:
        for m in modules:
            stack.enter_context(accelerator.no_sync(m))
    return stack


def _chunks(idx: torch.Tensor, parts: int) -> Iterator[torch.Tensor]:
    return (c for c in idx.chunk(parts) if c.numel())


def update(policy, rollout: Rollout, s: UpdateSettings, *, beta: float, optimizer, params: list[torch.nn.Parameter],
           accelerator=None, sync_modules: tuple = (), value_model=None, sft: SequenceBatch | None = None,
           generator: torch.Generator | None = None) -> dict[str, float]:
    """``epochs`` passes of clipped policy-gradient steps over ``minibatches`` of the rollout.

    Each minibatch is split into ``grad_accum`` micro-batches (gradients synchronised across
    processes only on the last); for BOND, ``sft`` rows (best-of-N reference samples) add the
    forward-KL term :math:`\\alpha\\cdot\\mathrm{NLL}` and the RL part is weighted :math:`1-\\alpha`.
    """
    rows = rollout.mask.shape[0]
    stats: dict[str, list[float]] = defaultdict(list)
    backward = accelerator.backward if accelerator is not None else (lambda loss: loss.backward())
    alpha = s.forward_weight if sft is not None else 0.0
    for _ in range(s.epochs):
        perm = torch.randperm(rows, generator=generator)
        for mb in _chunks(perm, s.minibatches):
            steps: list[tuple[str, torch.Tensor, float]] = [("rl", i, len(i) / len(mb)) for i in _chunks(mb, s.grad_accum)]
            if sft is not None and alpha > 0:
                sft_rows = torch.randperm(sft.response_ids.shape[0], generator=generator)[: max(1, len(mb) // s.n)]
                steps += [("sft", i, len(i) / len(sft_rows)) for i in _chunks(sft_rows, s.grad_accum)]
            optimizer.zero_grad(set_to_none=True)
            for j, (kind, idx, weight) in enumerate(steps):
                with _no_sync(accelerator, sync_modules, skip=j < len(steps) - 1):
                    if kind == "sft":
                        nll = -aggregate(policy.score(select_rows(sft, idx)), select_rows(sft, idx).response_mask.float(),
                                         s.loss_agg)
                        stats["sft_nll"].append(float(nll.detach()))
                        backward(alpha * weight * nll)
                        continue
                    sub = select_rows(rollout.batch, idx)
                    mask = rollout.mask[idx]
                    full = s.kl_estimator == "full"
                    if full:
                        log_dist = response_log_dist(policy, sub, s.temperature)
                        logp = gather_tokens(log_dist, sub)
                    else:
                        logp = policy.score(sub, temperature=s.temperature).float()
                    pg, clipped = clipped_surrogate(logp, rollout.old_logp[idx], rollout.advantages[idx], s.clip)
                    loss = aggregate(pg, mask, s.loss_agg)
                    stats["pg_loss"].append(float(loss.detach()))
                    stats["clipfrac"].append(float((clipped.detach() * mask).sum() / mask.sum().clamp_min(1)))
                    stats["approx_kl_old"].append(float(((rollout.old_logp[idx] - logp.detach()) * mask).sum()
                                                        / mask.sum().clamp_min(1)))
                    if full:
                        kl_loss = aggregate(token_kl(log_dist, rollout.ref_log_dist[idx]), mask, s.loss_agg)
                        stats["kl_loss"].append(float(kl_loss.detach()))
                        loss = loss + beta * kl_loss
                    elif s.kl_mode == "loss":
                        kl_loss = aggregate(kl_per_token(logp, rollout.ref_logp[idx], s.kl_estimator), mask, s.loss_agg)
                        stats["kl_loss"].append(float(kl_loss.detach()))
                        loss = loss + beta * kl_loss
                    if value_model is not None:
                        v = value_model(sub).float()
                        vf = aggregate(clipped_value_loss(v, rollout.old_values[idx], rollout.returns[idx], s.value_clip),
                                       mask, s.loss_agg)
                        stats["vf_loss"].append(float(vf.detach()))
                        loss = loss + s.vf_coef * vf
                    backward((1.0 - alpha) * weight * loss)
            max_norm = s.max_grad_norm or math.inf  # 0: measure the norm, do not clip
            if accelerator is not None:
                norm = accelerator.clip_grad_norm_(params, max_norm)
            else:
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            norm = float(norm)
            if norm != norm or norm in (float("inf"), float("-inf")):
                raise FloatingPointError("non-finite gradient norm")
            stats["grad_norm"].append(norm)
            optimizer.step()
    return {k: sum(v) / len(v) for k, v in stats.items()}
