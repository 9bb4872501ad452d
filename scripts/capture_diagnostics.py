"""Where a CTRL-identity run's captured fraction goes (docs/ctrl.md, "Where CTRL-identity's last
tenth goes"). Three checks, each against the exact calculus of ``mmalign frontier``:

* ``per-prompt RESULTS.json ...``: from ``mmalign evaluate winrate`` results, the captured
  fraction, and how much of the gain uneven KL across prompts costs (the identity tilt's win
  rate averaged over the per-prompt KLs against the tilt at the mean KL).
* ``ties STORE.safetensors``: how many reference rewards in a calibration store repeat, and the
  exact optimum of that discrete reward distribution (the samples tilted by exp(c/β)) against the
  continuous calculus at the same KL.
* ``average OUT DIR DIR ...``: a policy whose weights are the mean of several final policies
  (same architecture), to evaluate with ``mmalign evaluate winrate``: averaging removes the part
  of the gradient noise the runs do not share.

    python scripts/capture_diagnostics.py per-prompt runs/reproduce/eval/train/ctrl-identity-kl1-s*/results.json
    python scripts/capture_diagnostics.py ties runs/reproduce/runs/calibration.safetensors
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="check", required=True)
    sub.add_parser("per-prompt").add_argument("results", nargs="+", type=Path)
    sub.add_parser("ties").add_argument("store", type=Path)
    avg = sub.add_parser("average")
    avg.add_argument("out", type=Path)
    avg.add_argument("sources", nargs="+", type=Path)
    args = ap.parse_args()
    if args.check == "per-prompt":
        per_prompt(args.results)
    elif args.check == "ties":
        ties(args.store)
    else:
        average(args.out, args.sources)


if __name__ == "__main__":
    main()
