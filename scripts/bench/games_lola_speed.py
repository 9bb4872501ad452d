"""Time exact LOLA on the transparent prisoner's dilemma: 1,000 seeds × 500 steps, vectorised.

    python scripts/bench/games_lola_speed.py [--seeds 1000] [--steps 500] [--loop-seeds 10 --loop-steps 50]

Compares against a plain per-seed loop with torch.autograd.grad(create_graph=True) on a subset
and prints the per-(seed·step) cost ratio. Target: the vectorised run under 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from mmalign.games import LearnerSpec, PolicySpec, get_game, train, update, values


def loop_lola(vfn, th1: torch.Tensor, th2: torch.Tensor, steps: int, lr: float, eta: float):
    """Per seed, per step: Δθ_1 = α∇_1V^1 + αη ∇_1[∇_2V^2 · stop(∇_2V^1)] (and symmetrically)."""
    for _ in range(steps):
        t1, t2 = th1.clone().requires_grad_(), th2.clone().requires_grad_()
        v1, v2 = vfn(t1, t2)
        d1v1, d2v1 = torch.autograd.grad(v1, (t1, t2), create_graph=True)
        d1v2, d2v2 = torch.autograd.grad(v2, (t1, t2), create_graph=True)
        s1 = torch.autograd.grad((d2v2 * d2v1.detach()).sum(), t1, retain_graph=True)[0]
        s2 = torch.autograd.grad((d1v1 * d1v2.detach()).sum(), t2)[0]
        th1 = (th1 + lr * (d1v1 + eta * s1)).detach()
        th2 = (th2 + lr * (d2v2 + eta * s2)).detach()
    return th1, th2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--loop-seeds", type=int, default=10)
    ap.add_argument("--loop-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epsilon", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    game, policy, learner = get_game("prisoners_dilemma"), PolicySpec(epsilon=args.epsilon), LearnerSpec("lola")

    train(game, policy, learner, seeds=8, steps=3)  # warm-up (first jvp loads decompositions)
    t0 = time.perf_counter()
    res = train(game, policy, learner, seeds=args.seeds, steps=args.steps, seed=0, log_every=args.steps)
    vec = time.perf_counter() - t0

    u1, u2 = game.tensors()
    vfn = partial(values, policy, u1, u2)
    t0 = time.perf_counter()
    for _ in range(args.loop_seeds):
        loop_lola(vfn, torch.randn(3, dtype=torch.float64),
                  torch.randn(3, dtype=torch.float64), args.loop_steps, learner.lr, learner.eta)
    loop_t = time.perf_counter() - t0
    per_vec = vec / (args.seeds * args.steps)
    per_loop = loop_t / (args.loop_seeds * args.loop_steps)
    # same answer: the vectorised update equals the loop on the first seed's trajectory
    g = torch.Generator().manual_seed(1)
    a1, a2 = torch.randn(2, 1, 3, generator=g, dtype=torch.float64)
    b1, b2 = a1, a2
    for _ in range(20):
        b1, b2, _ = update(vfn, b1, b2, learner)
    c1, c2 = loop_lola(vfn, a1[0], a2[0], 20, learner.lr, learner.eta)
    err = max(float((b1[0] - c1).abs().max()), float((b2[0] - c2).abs().max()))

    print(f"vectorised LOLA, transparent PD ε={args.epsilon}: {args.seeds} seeds × {args.steps} steps "
          f"in {vec:.2f} s ({args.threads} threads); final mean P(CC) {float(res.joint[:, 0].mean()):.3f}")
    print(f"plain double-autograd loop: {args.loop_seeds} seeds × {args.loop_steps} steps in {loop_t:.2f} s "
          f"-> {per_loop * args.seeds * args.steps:.0f} s extrapolated to {args.seeds} × {args.steps}")
    print(f"speed-up per seed-step: {per_loop / per_vec:.0f}x; max |Δθ| vs loop after 20 steps: {err:.1e}")
    print("PASS" if vec < 60 else "SLOW", "(target < 60 s)")


if __name__ == "__main__":
    main()
