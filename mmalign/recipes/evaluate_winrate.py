"""Recipe ``mmalign evaluate winrate``: does alignment pay off for the way the model is deployed?

1. Draw ``samples_per_prompt`` responses per prompt from the policy and from the reference.
2. Score them with the selection reward (what best/worst-of-N pick by) and the judge reward.
3. For each procedure, the U-statistic win rate per prompt (:mod:`mmalign.evaluation.winrate`),
   averaged over prompts, with a bootstrap 95% interval over prompts.
4. KL(π‖π_ref) from the policy's own samples: mean of log π(y|x) − log π_ref(y|x), with its
   standard error over prompts.
5. Write ``results.json``, ``report.md`` and plots (win rate against KL over the analytic frontier;
   reward distributions).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from mmalign.align.procedures import Procedure
from mmalign.config.schemas.winrate import EvalSamplingConfig, WinrateConfig
from mmalign.data import load_prompts
from mmalign.evaluation.plots import frontier_curves, plot_reward_distributions, plot_winrate_vs_kl
from mmalign.evaluation.winrate import kl_estimate, win_rate
from mmalign.models.loading import load_policy
from mmalign.models.policy import Prompt
from mmalign.rewards import build_reward
from mmalign.rl.kl import token_kl
from mmalign.rl.step import gather_tokens, log_distributions, select_rows
from mmalign.utils.atomic import atomic_write_text
from mmalign.utils.progress import progress
from mmalign.utils.rundir import RunDir
from mmalign.utils.seed import seed_everything

KEPT_DISTRIBUTIONS_BYTES = 256 * 2**20  # the most one sampling call keeps for the KL (fp32)


def keeps_distributions(policy, s: EvalSamplingConfig, rows: int) -> bool:
    """Whether the policy's sampler should keep its next-token distributions for the KL: they are
    the policy's own only without warping (temperature 1, no top-p / top-k), and they are kept only
    while ``rows × max_new_tokens × vocabulary`` fits :data:`KEPT_DISTRIBUTIONS_BYTES` (a 49k
    vocabulary would need gigabytes; the KL then recomputes them in chunks)."""
    vocab = getattr(policy, "vocab_size", None)
    plain = s.temperature == 1.0 and s.top_p >= 1.0 and s.top_k == 0
    return plain and vocab is not None and rows * s.max_new_tokens * vocab * 4 <= KEPT_DISTRIBUTIONS_BYTES


def sequence_kls(policy, reference, samples, chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Two per-sample estimates of the sequence KL on the policy's own samples, from one forward
    of each model: the log-ratio :math:`\log\pi(y) - \log\pi_{ref}(y)`, and the exact per-token
    KL summed over the visited states (:func:`mmalign.rl.kl.token_kl`; unbiased, less noisy).
    The second is None when the two models' vocabularies differ (the log-ratio then comes from
    ``score``). The policy's distributions come from ``samples.distributions`` when its sampler
    kept them (:func:`keeps_distributions`), which saves the policy's forward pass."""
    rows = samples.response_ids.shape[0]
    kept = samples.distributions
    ratios, exact = [], []
    for i in range(0, rows, chunk):
        sub = select_rows(samples, torch.arange(i, min(i + chunk, rows)))
        log_p = kept[i:i + chunk].float() if kept is not None else log_distributions(policy, sub)
        log_ref = log_distributions(reference, sub)
        if log_p.shape != log_ref.shape:
            mask = samples.response_mask.to(torch.float32)
            return ((policy.score(samples) - reference.score(samples)) * mask).sum(-1), None
        mask = sub.response_mask.to(log_p.device)
        ratios.append((gather_tokens(log_p, sub) - gather_tokens(log_ref, sub)).sum(-1))
        exact.append((token_kl(log_p, log_ref) * mask).sum(-1))
    return torch.cat(ratios), torch.cat(exact)


def _draw(policy, reference, prompts, cfg: WinrateConfig, generators: tuple[torch.Generator, torch.Generator]):
    """Samples from both policies plus two per-sample estimates of the sequence KL on the policy's
    samples: the log-ratio, and the exact per-token KL summed (None if the vocabularies differ).

    Each policy has its own generator, so the reference samples depend only on the reference, the
    prompts and the seed: every method evaluated with the same seed meets the same reference draws.
    """
    s = cfg.sampling
    kw = dict(n=cfg.samples_per_prompt, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
              top_p=s.top_p, top_k=s.top_k)
    with torch.no_grad():
        ref = reference.sample(prompts, generator=generators[1], **kw)
        keep = keeps_distributions(policy, s, len(prompts) * cfg.samples_per_prompt)
        pol = policy.sample(prompts, generator=generators[0], keep_distributions=keep, **kw)
        logratio, exact = sequence_kls(policy, reference, pol)
    return pol, ref, logratio.cpu().numpy(), None if exact is None else exact.cpu().numpy()


def run_winrate(cfg: WinrateConfig, run: RunDir) -> dict:
    """Run the evaluation; returns the results dict also written to ``results.json``."""
    seed_everything(cfg.run.seed)
    records = load_prompts(cfg.prompts)
    prompts = [Prompt(text=r.prompt, media=r.media) for r in records]
    policy = load_policy(cfg.policy, run_device=cfg.run.device, run_dtype=cfg.run.dtype, key="policy")
    reference = load_policy(cfg.reference, run_device=cfg.run.device, run_dtype=cfg.run.dtype, key="reference")
    policy.eval()
    reference.eval()
    selection = build_reward(cfg.selection_reward, "selection_reward")
    judge = build_reward(cfg.judge_reward, "judge_reward") if cfg.judge_reward is not None else selection
    generators = (torch.Generator(device=policy.device).manual_seed(cfg.run.seed),
                  torch.Generator(device=reference.device).manual_seed(cfg.run.seed + 1))

    m = cfg.samples_per_prompt
    pol_sel, pol_judge, ref_sel, ref_judge, logratios, exact_kls = [], [], [], [], [], []
    timings = {"generation": 0.0, "reward": 0.0}
    bar = progress(total=len(prompts), desc="evaluate winrate")
    for start in range(0, len(prompts), cfg.batch_prompts):
        batch = prompts[start:start + cfg.batch_prompts]
        t0 = time.perf_counter()
        pol, ref, logratio, exact_kl = _draw(policy, reference, batch, cfg, generators)
        t1 = time.perf_counter()
        texts = [p.text for p in batch for _ in range(m)]
        media = [p.media for p in batch for _ in range(m)]
        scored = []
        for reward in ((selection, judge) if judge is not selection else (selection,)):
            scored.append((reward(texts, pol.texts, media).numpy(), reward(texts, ref.texts, media).numpy()))
        (ps, rs), (pj, rj) = scored[0], scored[-1]
        timings["generation"] += t1 - t0
        timings["reward"] += time.perf_counter() - t1
        for i in range(len(batch)):
            rows = slice(i * m, (i + 1) * m)
            pol_sel.append(ps[rows])
            pol_judge.append(pj[rows])
            ref_sel.append(rs[rows])
            ref_judge.append(rj[rows])
            logratios.append(logratio[rows])
            exact_kls.append(None if exact_kl is None else exact_kl[rows])
        bar.update(len(batch))
    bar.close()

    kl_sample, kl_sample_se = kl_estimate(logratios)
    exact_ok = all(v is not None for v in exact_kls)
    kl, kl_se = kl_estimate(exact_kls) if exact_ok else (kl_sample, kl_sample_se)
    label = cfg.label or cfg.run.name
    results = {
        "label": label,
        "num_prompts": len(prompts),
        "samples_per_prompt": m,
        "kl": kl,
        "kl_se": kl_se,
        "kl_estimator": "token_kl" if exact_ok else "log_ratio",
        "kl_log_ratio": kl_sample,
        "kl_log_ratio_se": kl_sample_se,
        "kl_per_prompt": [float(np.mean(v)) for v in (exact_kls if exact_ok else logratios)],
        "policy_judge_reward_mean": float(np.mean(np.concatenate(pol_judge))),
        "reference_judge_reward_mean": float(np.mean(np.concatenate(ref_judge))),
        "win_rates": [],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    for spec in cfg.procedures:
        proc = Procedure(spec.name, spec.n)
        est = win_rate(pol_sel, pol_judge, ref_sel, ref_judge, proc, reps=cfg.bootstrap_reps, seed=cfg.run.seed)
        results["win_rates"].append({"label": proc.label, **est.as_dict(), "per_prompt": est.per_prompt})
        run.log_metrics(0, procedure=proc.label, win_rate=est.win_rate, ci_low=est.ci_low, ci_high=est.ci_high)
    run.log_metrics(0, kl=kl, kl_se=kl_se)

    plots = _write_plots(run.path, cfg, results, np.concatenate(pol_judge), np.concatenate(ref_judge))
    results["plots"] = [p.name for p in plots]
    atomic_write_text(run.path / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(run.path / "report.md", report_markdown(results))
    return results


def _write_plots(out: Path, cfg: WinrateConfig, results: dict, pol_judge: np.ndarray,
                 ref_judge: np.ndarray) -> list[Path]:
    paths = [plot_reward_distributions(out / "reward_distributions.png", pol_judge, ref_judge,
                                       xlabel="judge reward")]
    for spec, wr in zip(cfg.procedures, results["win_rates"]):
        point = {"label": results["label"], "kl": max(results["kl"], 0.0), "kl_se": results["kl_se"],
                 "win_rate": wr["win_rate"], "ci_low": wr["ci_low"], "ci_high": wr["ci_high"]}
        curves = frontier_curves(spec.name, spec.n, cfg.frontier.transforms,
                                 max(cfg.frontier.kl_max, 1.2 * max(results["kl"], 0.0)), cfg.frontier.points)
        name = "standard" if spec.name == "standard" else f"{spec.name}{spec.n}"
        paths.append(plot_winrate_vs_kl(out / f"winrate_vs_kl_{name}.png", spec.name, spec.n, [point], curves))
    return paths


def report_markdown(results: dict) -> str:
    """The human-readable report."""
    lines = [
        f"# Inference-time win rate: {results['label']}",
        "",
        f"{results['num_prompts']} prompts, {results['samples_per_prompt']} samples per prompt from each policy.",
        "",
        f"**KL(π‖π_ref)** = {results['kl']:.4f} nats (standard error {results['kl_se']:.4f}), "
        + ("the exact per-token KL summed over the states of the policy's own samples"
           if results.get("kl_estimator") == "token_kl" else "the log-ratio of the policy's own samples")
        + f" (log-ratio estimate: {results['kl_log_ratio']:.4f} ± {results['kl_log_ratio_se']:.4f}).",
        "",
        "| procedure | win rate vs reference | 95% interval |",
        "|---|---|---|",
    ]
    for wr in results["win_rates"]:
        lines.append(f"| {wr['label']} | {wr['win_rate']:.3f} | [{wr['ci_low']:.3f}, {wr['ci_high']:.3f}] |")
    lines += [
        "",
        f"Mean judge reward: policy {results['policy_judge_reward_mean']:.4f}, "
        f"reference {results['reference_judge_reward_mean']:.4f}.",
        "",
        "Ties count half. Intervals: percentile bootstrap over prompts.",
        "",
    ]
    lines += [f"![{p}]({p})" for p in results.get("plots", [])]
    return "\n".join(lines) + "\n"
