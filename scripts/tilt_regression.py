r"""Probe: fit an align config's tilt by regression instead of policy gradient (docs/ctrl.md, tenth pass).

For the optimum :math:`\pi^* \propto \pi_{ref}\,e^{\Phi(c)/\beta}` of the KL-regularised objective,
:math:`\beta \log \pi^*(y)/\pi_{ref}(y) = \Phi(c(y)) - \beta \log Z(x)` holds for every response.
So the squared residual, centred within each prompt's group of samples,

.. math:: e_i = \beta\,(L_i - \bar L) - (\Phi_i - \bar\Phi), \qquad L_i = \log \pi(y_i) - \log \pi_{ref}(y_i),

is zero exactly at the tilt, whatever distribution the samples come from (here fresh reference
samples, optionally mixed with the policy's). Every sample gets a deterministic target, so this
fit has no policy-gradient noise and no KL controller: the KL comes out of the fit. If it lands
at the same captured fraction as the RL, the limit is what the model can represent and reach, not
the gradient estimator.

    python scripts/tilt_regression.py configs/reproduce/ctrl_exp.yaml --out DIR \
        model.path=REF calibration.store=STORE kl.target=0.25 [--lr 2.5e-4] [--steps 600]

Uses the config's model, reward, prompts, calibration store and transform (β: the calculus's for
``kl.target`` unless ``kl.beta`` is set); writes ``DIR/final`` (evaluate it with ``mmalign
evaluate winrate``) and ``DIR/metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mmalign.align.scores import score
from mmalign.config.loader import load_config
from mmalign.config.schemas.align import AlignConfig
from mmalign.recipes import align
from mmalign.training import accelerate_setup, batches
from mmalign.utils.seed import seed_everything


def group_log_ratios(policy, reference, samples, m: int) -> torch.Tensor:
    """Sequence log-ratios log π/π_ref [B, m] (gradient through the policy only)."""
    with torch.no_grad():
        ref = reference.score(samples).sum(-1)
    return (policy.score(samples).sum(-1) - ref).view(-1, m)


def centred_residual(log_ratio: torch.Tensor, phi: torch.Tensor, beta: float) -> torch.Tensor:
    """β(L − L̄) − (Φ − Φ̄) per group row [B, m]; zero for every sample at the tilt."""
    return beta * (log_ratio - log_ratio.mean(1, keepdim=True)) - (phi - phi.mean(1, keepdim=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the align config")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2.5e-4, help="AdamW, linear decay to 0")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per step")
    ap.add_argument("--ref-samples", type=int, default=8, help="reference samples per prompt and step")
    ap.add_argument("--policy-samples", type=int, default=0, help="policy samples per prompt and step")
    args = ap.parse_intermixed_args()

    cfg = load_config(args.config, AlignConfig, [*args.overrides, f"run.output_dir={args.out}", "run.name=probe"])
    seed_everything(cfg.run.seed)
    accelerator = align.make_accelerator(cfg)
    task = align.build_task(cfg, accelerate_setup.run_device(accelerator))
    policy, reference = task.policy, task.policy.reference()
    phi, beta = align.choose_transform(cfg)
    if phi is None or beta is None:
        raise SystemExit("tilt_regression.py: needs a calibrated transform and a beta (kl.beta or kl.target)")
    store = Path(cfg.calibration.store) if cfg.calibration.store else args.out / "calibration.safetensors"
    ref_rewards = align.calibrate_prompts(cfg, task, reference, store, accelerator)
    params = policy.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / args.steps)
    sampling = {"max_new_tokens": cfg.rollout.max_new_tokens, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with (args.out / "metrics.jsonl").open("w") as log:
        for step in range(1, args.steps + 1):
            gen = torch.Generator().manual_seed(align._seed(cfg.run.seed, "regression", step))
            idx = batches.batch(len(task.prompts), args.prompts, step - 1, cfg.run.seed)
            prompts = [task.prompts[i] for i in idx]
            ratios, scores = [], []
            for sampler, m in ((reference, args.ref_samples), (policy, args.policy_samples)):
                if m == 0:
                    continue
                with torch.no_grad():
                    samples = sampler.sample(prompts, m, generator=gen, **sampling)
                raw = align.score_rewards(task.reward, [prompts[i // m] for i in range(len(samples.texts))],
                                          samples.texts, f"step {step}")
                scores.append(score(raw, [ref_rewards[i] for i in idx], m, transform=phi).scores.view(-1, m))
                ratios.append(group_log_ratios(policy, reference, samples, m))
            loss = centred_residual(torch.cat(ratios, 1), torch.cat(scores, 1), beta).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm or float("inf")))
            optimizer.step()
            schedule.step()
            row = {"step": step, "loss": float(loss.detach()), "grad_norm": norm,
                   "forward_kl": -float(ratios[0].detach().mean()) if args.ref_samples else None,
                   "time": time.time() - start}
            log.write(json.dumps(row) + "\n")
    policy.save(args.out / "final")
    print(f"{args.out / 'final'}: {args.steps} steps in {time.time() - start:.0f} s; beta {beta:.4g}, {phi.describe()}")


if __name__ == "__main__":
    main()
