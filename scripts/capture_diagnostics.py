"""Where a CTRL-identity run's captured fraction goes (docs/ctrl.md, "Where CTRL-identity's last
tenth goes"). Five checks, each against the exact calculus of ``mmalign frontier``:

* ``per-prompt RESULTS.json ...``: from ``mmalign evaluate winrate`` results, the captured
  fraction, and how much of the gain uneven KL across prompts costs (the identity tilt's win
  rate averaged over the per-prompt KLs against the tilt at the mean KL).
* ``ties STORE.safetensors``: how many reference rewards in a calibration store repeat, and the
  exact optimum of that discrete reward distribution (the samples tilted by exp(c/β)) against the
  continuous calculus at the same KL.
* ``training-log RUN ...``: the captured fraction from an align run's own metrics (mean calibrated
  reward and KL over its last 50 steps): a cheap, low-noise screen of trainer settings.
* ``levels POLICY REFERENCE``: the policy's KL split into the KL of the law of its calibrated
  reward (what the tilt spends) and the KL spent within reward levels (which the tilt never
  spends), from 128 policy samples per training prompt against 512 fresh reference samples.
* ``average OUT DIR DIR ...``: a policy whose weights are the mean of several final policies
  (same architecture), to evaluate with ``mmalign evaluate winrate``: averaging removes the part
  of the gradient noise the runs do not share.

    python scripts/capture_diagnostics.py per-prompt runs/reproduce/eval/train/ctrl-identity-kl1-s*/results.json
    python scripts/capture_diagnostics.py ties runs/reproduce/runs/calibration.safetensors
    python scripts/capture_diagnostics.py training-log runs/reproduce/runs/ctrl-identity-kl1-s*
    python scripts/capture_diagnostics.py levels runs/reproduce/runs/ctrl-identity-kl1-s0/final \\
        runs/reproduce/runs/sft-nano/final
    python scripts/capture_diagnostics.py average /tmp/avg runs/reproduce/runs/ctrl-identity-kl1-s0/final \\
        runs/reproduce/runs/ctrl-identity-kl1-s1/final
"""

from __future__ import annotations

import argparse
import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np

from mmalign.align import analytic
from mmalign.align.procedures import Procedure
from mmalign.align.transforms import get_transform

GRID = analytic.make_grid()


@lru_cache(maxsize=4096)
def _identity_win_rate(kl: float) -> float:
    return analytic.evaluate(get_transform("identity"), Procedure("standard", 1), max(kl, 1e-4), GRID).win_rate


def identity_win_rate(kl: float) -> float:
    """The exact standard win rate of the identity tilt of the reference at KL ``kl``."""
    return _identity_win_rate(round(float(kl), 4))


def per_prompt(paths: list[Path]) -> None:
    for path in paths:
        r = json.loads(path.read_text())
        kls = np.asarray(r["kl_per_prompt"])
        wins = np.asarray(r["win_rates"][0]["per_prompt"])  # the first procedure: standard
        w, kl = wins.mean(), kls.mean()
        tilt, uneven = identity_win_rate(kl), np.mean([identity_win_rate(k) for k in kls])
        print(f"{path.parent.name}: KL {kl:.3f} (cv {kls.std() / kl:.2f}), standard {w:.3f}, tilt at that KL {tilt:.3f}, "
              f"captured {(w - .5) / (tilt - .5):.3f}; uneven-KL ceiling {(uneven - .5) / (tilt - .5):.3f}")


def _mid_quantiles(rewards: np.ndarray) -> np.ndarray:
    """Each sample's calibrated reward among the others: P(R < r) + P(R = r) / 2."""
    return (rewards[None, :] < rewards[:, None]).mean(1) + (rewards[None, :] == rewards[:, None]).mean(1) / 2


def ties(store: Path, betas: tuple[float, ...] = (0.5, 0.35, 0.25, 0.2, 0.157, 0.12)) -> None:
    from safetensors import safe_open

    with safe_open(str(store), "pt") as f:
        values = f.get_tensor("values").double().numpy()
        offsets = f.get_tensor("offsets").long().numpy()
    groups = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:]) if b > a]
    repeated = np.mean([1 - len(np.unique(g)) / len(g) for g in groups])
    print(f"{len(groups)} prompts x {len(groups[0])} reference rewards; {repeated:.0%} of samples repeat another's reward")
    cs = [_mid_quantiles(g) for g in groups]
    for beta in betas:
        kls, wins = [], []
        for c in cs:
            w = np.exp((c - c.max()) / beta)
            w /= w.sum()
            kls.append(float(np.sum(w * np.log(w * len(c)))))
            wins.append(float(np.sum(w * c)))
        kl, win = np.mean(kls), np.mean(wins)
        tilt = identity_win_rate(kl)
        print(f"beta {beta:.3f}: discrete optimum KL {kl:.3f} win rate {win:.3f}; continuous calculus {tilt:.3f}; "
              f"ratio of gains {(win - .5) / (tilt - .5):.3f}")


def average(out: Path, sources: list[Path]) -> None:
    from safetensors.torch import load_file, save_file

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(sources[0], out)
    for weights in sources[0].glob("*.safetensors"):
        parts = [load_file(str(s / weights.name)) for s in sources]
        mean = {k: sum(p[k].double() for p in parts).div(len(parts)).to(parts[0][k].dtype) for k in parts[0]}
        save_file(mean, str(out / weights.name), metadata={"format": "pt"})
    print(f"{out}: mean of {len(sources)} policies")


def training_log(runs: list[Path], last: int = 50) -> None:
    """Captured fraction from an align run's own log: its mean calibrated reward and KL over the
    last ``last`` steps (``last`` x 128 episodes: less noise than one evaluation, but a mean over
    steps whose policy is still moving, so a little below the final policy's)."""
    for run in runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        tail = rows[-last:]
        kl = float(np.mean([r["kl"] for r in tail]))
        c = float(np.mean([r["reward_calibrated"] for r in tail]))
        print(f"{run.name}: {len(rows)} steps; last {len(tail)}: KL {kl:.3f}, calibrated reward {c:.3f}, "
              f"captured {(c - .5) / (identity_win_rate(kl) - .5):.3f}; final beta {rows[-1]['beta']:.4g}")


def _scores(reward, batch: list, texts: list[str], m: int):
    """Rewards of ``m`` responses per prompt of ``batch``, as a float64 [prompts, m] tensor."""
    return reward([p.text for p in batch for _ in range(m)], texts).reshape(len(batch), m).double()


def levels(policy: Path, reference: Path, samples: int = 128, ref_samples: int = 512, bins: int = 10,
           eval_config: Path = Path("configs/reproduce/winrate_train.yaml")) -> None:
    """Where a policy's KL goes: KL(pi || ref) = KL of the law of its calibrated reward c (what the
    tilt spends) + the KL within reward levels (which the tilt never spends). ``samples`` policy
    samples per prompt, c against ``ref_samples`` fresh reference samples, the law of c by a
    ``bins``-bin histogram per prompt (Miller-Madow corrected; the identity tilt loses about 0.02
    nats at KL 1 to the binning)."""
    import torch

    from mmalign.align import calibrate
    from mmalign.config import load_config
    from mmalign.config.schemas.winrate import WinrateConfig
    from mmalign.data import load_prompts
    from mmalign.models.loading import load_policy
    from mmalign.models.policy import Prompt
    from mmalign.recipes.evaluate_winrate import sequence_kls
    from mmalign.rewards import build_reward

    cfg = load_config(eval_config, WinrateConfig, [f"policy.path={policy}", f"reference.path={reference}"])
    prompts = [Prompt(text=r.prompt, media=r.media) for r in load_prompts(cfg.prompts)]
    pol = load_policy(cfg.policy, run_device="cpu", run_dtype="float32", key="policy")
    ref = load_policy(cfg.reference, run_device="cpu", run_dtype="float32", key="reference")
    pol.eval()
    ref.eval()
    reward = build_reward(cfg.selection_reward, "selection_reward")
    gp, gr = torch.Generator().manual_seed(cfg.run.seed), torch.Generator().manual_seed(cfg.run.seed + 1)
    n_new = cfg.sampling.max_new_tokens
    cs, ref_cs, kls = [], [], []
    with torch.no_grad():
        for i in range(0, len(prompts), 8):
            batch = prompts[i:i + 8]
            rs = ref.sample(batch, n=ref_samples, max_new_tokens=n_new, generator=gr)
            ps = pol.sample(batch, n=samples, max_new_tokens=n_new, generator=gp)
            _, exact = sequence_kls(pol, ref, ps)
            rr = _scores(reward, batch, rs.texts, ref_samples)
            cs.append(calibrate(rr, _scores(reward, batch, ps.texts, samples)).numpy())
            ref_cs.append(calibrate(rr, rr).numpy())
            kls.append(exact.reshape(len(batch), samples).numpy())
    cs, ref_cs, kls = np.concatenate(cs), np.concatenate(ref_cs), np.concatenate(kls)
    edges = np.linspace(0, 1, bins + 1)
    marginal = []
    for c, rc in zip(cs, ref_cs):
        hp, hr = np.histogram(c, edges)[0] / samples, np.histogram(rc, edges)[0] / ref_samples
        m = hp > 0
        marginal.append(float(np.sum(hp[m] * np.log(hp[m] / np.maximum(hr[m], 1e-12)))) - (m.sum() - 1) / (2 * samples))
    kl, c, mk = float(kls.mean()), float(cs.mean()), float(np.mean(marginal))
    print(f"{policy}: KL {kl:.3f}, mean c {c:.3f}, captured {(c - .5) / (identity_win_rate(kl) - .5):.3f}; "
          f"KL of the law of c {mk:.3f} (captured against it {(c - .5) / (identity_win_rate(mk) - .5):.3f}); "
          f"KL within reward levels {kl - mk:.3f} ({(kl - mk) / kl:.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="check", required=True)
    sub.add_parser("per-prompt").add_argument("results", nargs="+", type=Path)
    sub.add_parser("ties").add_argument("store", type=Path)
    avg = sub.add_parser("average")
    avg.add_argument("out", type=Path)
    avg.add_argument("sources", nargs="+", type=Path)
    sub.add_parser("training-log").add_argument("runs", nargs="+", type=Path)
    lv = sub.add_parser("levels")
    lv.add_argument("policy", type=Path)
    lv.add_argument("reference", type=Path)
    args = ap.parse_args()
    if args.check == "per-prompt":
        per_prompt(args.results)
    elif args.check == "ties":
        ties(args.store)
    elif args.check == "training-log":
        training_log(args.runs)
    elif args.check == "levels":
        levels(args.policy, args.reference)
    else:
        average(args.out, args.sources)


if __name__ == "__main__":
    main()
