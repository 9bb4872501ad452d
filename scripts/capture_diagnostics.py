"""Where a CTRL-identity run's captured fraction goes (docs/ctrl.md, "Where CTRL-identity's last
tenth goes"). Five checks, each against the exact calculus of ``mmalign frontier``:

* ``per-prompt RESULTS.json ...``: from ``mmalign evaluate winrate`` results, the captured
  fraction, and how much of the gain uneven KL across prompts costs (the identity tilt's win
  rate averaged over the per-prompt KLs against the tilt at the mean KL).
* ``ties STORE.safetensors [--transform exp:T --procedure bon:4]``: how many reference rewards in
  a calibration store repeat, and the exact optimum of that discrete reward distribution (the
  samples tilted by exp(Φ(c)/β)) against the continuous calculus at the same KL: what ties and a
  finite K cost a perfect optimiser.
* ``training-log RUN ... [--transform exp:T]``: the captured fraction from an align run's own
  metrics (mean calibrated reward and KL over its last 50 steps): a cheap, low-noise screen of
  trainer settings; with ``--transform``, also the captured fraction of the trained objective.
* ``levels POLICY REFERENCE [--transform exp:T]``: the policy's KL split into the KL of the law of
  its calibrated reward (what the tilt spends) and the KL spent within reward levels (which the
  tilt never spends), from 128 policy samples per training prompt against 512 fresh reference
  samples; then its law of c, bin by bin, next to the exact tilt's at the same KL.
* ``average OUT DIR DIR ...``: a policy whose weights are the mean of several final policies
  (same architecture), to evaluate with ``mmalign evaluate winrate``: averaging removes the part
  of the gradient noise the runs do not share.

    python scripts/capture_diagnostics.py per-prompt runs/reproduce/eval/train/ctrl-identity-kl1-s*/results.json
    python scripts/capture_diagnostics.py ties runs/reproduce/runs/calibration.safetensors --transform exp:6.52646 \\
        --procedure bon:4
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


def parse_transform(spec: str):
    """``identity``, ``log`` or ``exp:T`` / ``neg_exp:T`` (the transform and its t) as a Transform."""
    name, _, t = spec.partition(":")
    return get_transform(name, t=float(t)) if t else get_transform(name)


def _kept_win_rate(values: np.ndarray, p: np.ndarray, procedure: Procedure) -> float:
    """Exact win rate of the procedure on a policy with weights ``p`` on the reference samples
    ``values`` (uniform under the reference), ties counting half: the distinct values are the
    cells of :meth:`Procedure.win_rate`."""
    levels_, inverse = np.unique(values, return_inverse=True)

    def cdf(weights: np.ndarray) -> np.ndarray:
        return np.clip(np.concatenate([[0.0], np.cumsum(np.bincount(inverse, weights, len(levels_)))]), 0, 1)

    return procedure.win_rate(cdf(p), cdf(np.full(len(values), 1 / len(values))))


def ties(store: Path, transform: str = "identity", procedure: Procedure = Procedure("standard", 1),
         kls: tuple[float, ...] = (0.25, 0.5, 1.0)) -> None:
    """The exact optimum of the store's discrete reward distribution (its K samples per prompt
    tilted by exp(Phi(c)/beta), c the mid-quantile among them) against the continuous calculus at
    the same KL: what ties and a finite K cost a perfect optimiser."""
    from safetensors import safe_open
    from scipy.optimize import brentq

    with safe_open(str(store), "pt") as f:
        values = f.get_tensor("values").double().numpy()
        offsets = f.get_tensor("offsets").long().numpy()
    groups = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:]) if b > a]
    repeated = np.mean([1 - len(np.unique(g)) / len(g) for g in groups])
    print(f"{len(groups)} prompts x {len(groups[0])} reference rewards; {repeated:.0%} of samples repeat another's reward")
    phi = parse_transform(transform)
    phis = [np.asarray(phi(_mid_quantiles(g)), dtype=np.float64) for g in groups]

    def optimum(beta: float) -> tuple[float, float]:
        kl_sum, win_sum = 0.0, 0.0
        for g, f in zip(groups, phis):
            w = np.exp((f - f.max()) / beta)
            w /= w.sum()
            kl_sum += float(np.sum(w * np.log(np.maximum(w * len(g), 1e-300))))
            win_sum += _kept_win_rate(g, w, procedure)
        return kl_sum / len(groups), win_sum / len(groups)

    for target in kls:
        kl, win = optimum(brentq(lambda b, k=target: optimum(b)[0] - k, 1e-3, 1e3))
        tilt = analytic.evaluate(phi, procedure, kl, GRID).win_rate
        print(f"{phi.describe()}, {procedure.label}: discrete optimum KL {kl:.3f} win rate {win:.4f}; "
              f"continuous calculus {tilt:.4f}; ratio of gains {(win - .5) / (tilt - .5):.3f}")


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


def training_log(runs: list[Path], last: int = 50, transform: str | None = None) -> None:
    """Captured fraction from an align run's own log: its mean calibrated reward and KL over the
    last ``last`` steps (``last`` x 128 episodes: less noise than one evaluation, but a mean over
    steps whose policy is still moving, so a little below the final policy's). With ``transform``
    also the captured fraction of the trained objective: the gain of the mean transformed reward
    over the reference's against the exact tilt's at the same KL."""
    phi = parse_transform(transform) if transform else None
    for run in runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        tail = rows[-last:]
        kl = float(np.mean([r["kl"] for r in tail]))
        c = float(np.mean([r["reward_calibrated"] for r in tail]))
        line = (f"{run.name}: {len(rows)} steps; last {len(tail)}: KL {kl:.3f}, calibrated reward {c:.3f}, "
                f"captured {(c - .5) / (identity_win_rate(kl) - .5):.3f}; final beta {rows[-1]['beta']:.4g}")
        if phi is not None:
            values = np.asarray(phi(GRID.c), dtype=np.float64)
            ref, best = float(GRID.mass @ values), float(analytic.policy_at_kl(phi, kl, GRID).p @ values)
            got = float(np.mean([r["reward_transformed"] for r in tail]))
            line += f"; {phi.describe()} {got:.4f} (reference {ref:.4f}, tilt {best:.4f}): objective captured {(got - ref) / (best - ref):.3f}"
        print(line)


def _scores(reward, batch: list, texts: list[str], m: int):
    """Rewards of ``m`` responses per prompt of ``batch``, as a float64 [prompts, m] tensor."""
    return reward([p.text for p in batch for _ in range(m)], texts).reshape(len(batch), m).double()


def levels(policy: Path, reference: Path, samples: int = 128, ref_samples: int = 512, bins: int = 10,
           eval_config: Path = Path("configs/reproduce/winrate_train.yaml"), transform: str = "identity") -> None:
    """Where a policy's KL goes: KL(pi || ref) = KL of the law of its calibrated reward c (what the
    tilt spends) + the KL within reward levels (which the tilt never spends). ``samples`` policy
    samples per prompt, c against ``ref_samples`` fresh reference samples, the law of c by a
    ``bins``-bin histogram per prompt (Miller-Madow corrected; the identity tilt loses about 0.02
    nats at KL 1 to the binning). Then the law of c itself, bin by bin, against the exact tilt of
    ``transform`` (and the identity tilt) at the policy's KL: where the policy puts the mass the
    tilt would put elsewhere."""
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
    cs, ref_cs, kls, drawn = [], [], [], {"policy": [], "reference": []}
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
            drawn["policy"].append(ps)
            drawn["reference"].append(rs)
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
    law_of_c(cs, kl, edges, parse_transform(transform))
    for name, c, batches in (("policy", cs, drawn["policy"]), ("reference", ref_cs, drawn["reference"])):
        response_shape(name, c, batches, edges)


def response_shape(name: str, cs: np.ndarray, batches: list, edges: np.ndarray) -> None:
    """Mean response length (tokens) per c bin, and how many distinct texts the top bin holds per
    prompt: whether a policy's top mass is short, long, or a few answers repeated."""
    lengths = np.concatenate([b.response_mask.sum(1).numpy() for b in batches]).reshape(cs.shape)
    texts = np.asarray([t for b in batches for t in b.texts], dtype=object).reshape(cs.shape)
    bins = np.clip(np.digitize(cs, edges[1:-1]), 0, len(edges) - 2)
    mean_len = [f"{lengths[bins == k].mean():7.2f}" if (bins == k).any() else "      -" for k in range(len(edges) - 1)]
    top = bins == len(edges) - 2
    distinct = np.mean([len(set(texts[j][top[j]])) for j in range(cs.shape[0])])
    print(f"{name + ' tokens':>14} " + " ".join(mean_len)
          + f"  (top bin: {distinct:.1f} distinct texts of {top.sum(1).mean():.1f} per prompt)")


def law_of_c(cs: np.ndarray, kl: float, edges: np.ndarray, phi) -> None:
    """Print the policy's mass per c-bin next to the exact tilts' at KL ``kl``."""
    def tilt_mass(transform) -> np.ndarray:
        t = analytic.policy_at_kl(transform, kl, GRID)
        return np.diff(np.interp(edges, GRID.edges, t.cdf))

    rows = {"policy": np.histogram(cs.ravel(), edges)[0] / cs.size, phi.describe(): tilt_mass(phi)}
    if phi.name != "identity":
        rows["identity"] = tilt_mass(get_transform("identity"))
    print("mass per c bin " + " ".join(f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])))
    for name, mass in rows.items():
        print(f"{name:>14} " + " ".join(f"{m:7.3f}" for m in mass))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="check", required=True)
    sub.add_parser("per-prompt").add_argument("results", nargs="+", type=Path)
    ti = sub.add_parser("ties")
    ti.add_argument("store", type=Path)
    ti.add_argument("--transform", default="identity", help="identity, log, exp:T or neg_exp:T")
    ti.add_argument("--procedure", default="standard:1", help="standard:1, bon:4 or won:4")
    avg = sub.add_parser("average")
    avg.add_argument("out", type=Path)
    avg.add_argument("sources", nargs="+", type=Path)
    tl = sub.add_parser("training-log")
    tl.add_argument("runs", nargs="+", type=Path)
    tl.add_argument("--transform", default=None, help="also the trained objective's captured fraction (exp:T, ...)")
    lv = sub.add_parser("levels")
    lv.add_argument("policy", type=Path)
    lv.add_argument("reference", type=Path)
    lv.add_argument("--transform", default="identity", help="the tilt to compare the law of c with (exp:T, ...)")
    args = ap.parse_args()
    if args.check == "per-prompt":
        per_prompt(args.results)
    elif args.check == "ties":
        name, _, n = args.procedure.partition(":")
        ties(args.store, args.transform, Procedure(name, int(n or 1)))
    elif args.check == "training-log":
        training_log(args.runs, transform=args.transform)
    elif args.check == "levels":
        levels(args.policy, args.reference, transform=args.transform)
    else:
        average(args.out, args.sources)


if __name__ == "__main__":
    main()
