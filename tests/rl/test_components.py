"""KL estimators, advantage estimators, losses and the KL controller against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.rl.advantages import gae, group_norm, rloo, whiten
from mmalign.rl.kl import AdaptiveKLController, FixedKLController, kl_per_token, make_kl_controller
from mmalign.rl.losses import aggregate, clipped_surrogate, clipped_value_loss


def _dists():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    return theta, ref


def test_kl_estimators_expectations_match_closed_form():
    theta, ref = _dists()
    logp = torch.log_softmax(theta, -1).detach()
    p = logp.exp()
    kl = (p * (logp - ref)).sum()
    for est in ("k1", "k3"):  # unbiased
        assert torch.allclose((p * kl_per_token(logp, ref, est)).sum(), kl, atol=1e-12)
    k2 = (p * kl_per_token(logp, ref, "k2")).sum()
    assert not torch.allclose(k2, kl) and k2 > 0
    assert (kl_per_token(logp, ref, "k3") >= 0).all()


def test_kl_loss_gradients_exact():
    """E_pi[grad k2] = grad KL(pi||ref); E_pi[grad k3] = grad KL(ref||pi); E_pi[grad k1] = 0."""
    theta, ref = _dists()
    logp = torch.log_softmax(theta, -1)
    p = logp.exp().detach()

    def grad(f):
        return torch.autograd.grad(f, theta, retain_graph=True)[0]

    reverse = grad((logp.exp() * (logp - ref)).sum())
    forward = grad((ref.exp() * (ref - logp)).sum())
    assert torch.allclose(grad((p * kl_per_token(logp, ref, "k2")).sum()), reverse, atol=1e-12)
    assert torch.allclose(grad((p * kl_per_token(logp, ref, "k3")).sum()), forward, atol=1e-12)
    assert torch.allclose(grad((p * kl_per_token(logp, ref, "k1")).sum()), torch.zeros(7, dtype=torch.float64),
                          atol=1e-12)


def test_rloo_is_leave_one_out_and_group_norm_is_standardised():
    s = torch.tensor([1.0, 2.0, 4.0, 7.0, 0.0, 0.0, 3.0, -3.0])
    a = rloo(s, 4)
    for i in range(8):
        g = (i // 4) * 4
        others = [s[j] for j in range(g, g + 4) if j != i]
        assert a[i].item() == pytest.approx(s[i].item() - sum(o.item() for o in others) / 3)
    z = group_norm(s, 4).view(2, 4)
    assert torch.allclose(z.mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(z.std(1), torch.ones(2), atol=1e-4)
    with pytest.raises(ValueError):
        rloo(s, 1)


def test_gae_limits():
    torch.manual_seed(0)
    r, v = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    # lambda = gamma = 1: advantage = return-to-go - V
    adv, ret = gae(r, v, mask, 1.0, 1.0)
    rtg = (r * mask).flip(1).cumsum(1).flip(1) * mask
    assert torch.allclose(adv, (rtg - v) * mask, atol=1e-6)
    assert torch.allclose(ret, rtg, atol=1e-6)
    # lambda = 0: one-step TD error, value past the end counted as 0
    adv0, _ = gae(r, v, mask, 0.9, 0.0)
    nxt = torch.cat([v[:, 1:] * mask[:, 1:], torch.zeros(3, 1)], 1)
    assert torch.allclose(adv0, (r + 0.9 * nxt - v) * mask, atol=1e-6)


def test_whiten_and_aggregate():
    x = torch.tensor([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    w = whiten(x, m)
    vals = w[m.bool()]
    assert vals.mean().abs() < 1e-6 and (vals.square().mean() - 1).abs() < 1e-4 and w[0, 2] == 0
    assert aggregate(x, m, "token_mean").item() == pytest.approx(2.0)
    assert aggregate(x, m, "seq_sum").item() == pytest.approx(6.0 / 6)


def test_clipped_surrogate_stops_gradient_outside_trust_region():
    old = torch.zeros(4)
    logp = torch.tensor([0.0, math.log(1.5), math.log(0.5), math.log(1.1)], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, -1.0, 1.0])
    loss, clipped = clipped_surrogate(logp, old, adv, 0.2)
    loss.sum().backward()
    assert clipped.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert logp.grad[1] == 0 and logp.grad[2] == 0
    assert logp.grad[0] == pytest.approx(-1.0) and logp.grad[3] == pytest.approx(-1.1)
    v = clipped_value_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0]), 0.5)
    assert v.item() == pytest.approx(2.0)  # max of unclipped (4/2) and clipped (0.25/2)


def test_adaptive_controller_moves_log_beta_by_the_clipped_error():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(12.0, 512)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.2 * math.exp(0.2 * 512 / 10000))
    ctl.update(5.4, 512)  # error -0.1
    assert ctl.value == pytest.approx(0.2 * math.exp((0.2 - 0.1) * 512 / 10000))
    ctl.update(float("nan"), 512)  # a non-finite KL leaves beta alone
    assert ctl.value == pytest.approx(0.2 * math.exp(0.1 * 512 / 10000))
    other = AdaptiveKLController(1.0, 6.0, 10000)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value and other.updates == 3
    fixed = FixedKLController(0.3)
    fixed.update(100.0, 10)
    assert fixed.value == 0.3


def test_adaptive_controller_warms_up_and_stays_in_its_bounds():
    ctl = make_kl_controller("adaptive", 0.5, target=1.0, horizon=10, warmup=3)
    assert (ctl.beta_min, ctl.beta_max) == (0.05, 5.0)  # default clamp: a decade either way
    for _ in range(3):  # KL = 0 at the start: held during the warm-up
        ctl.update(0.0, 10)
    assert ctl.value == 0.5
    ctl.update(0.0, 10)
    assert ctl.value == pytest.approx(0.5 * math.exp(-0.2))
    for _ in range(100):  # a KL that never comes up cannot collapse beta below beta_min
        ctl.update(0.0, 10)
    assert ctl.value == pytest.approx(0.05)
    for _ in range(100):
        ctl.update(50.0, 10)
    assert ctl.value == pytest.approx(5.0)
    resumed = make_kl_controller("adaptive", 0.5, target=1.0, horizon=10, warmup=3)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.updates == 204 and resumed.value == ctl.value
    with pytest.raises(ValueError, match="outside"):
        make_kl_controller("adaptive", 0.5, target=1.0, horizon=10, beta_min=1.0)


def test_reward_to_go_kl_keeps_the_expected_gradient_of_the_sequence_penalty():
    """Exact expectation over every pair of 2-token samples from a tabular policy: charging token t
    only beta * sum_{s>=t} k_s (per-position leave-one-out baselines) gives the same expected
    policy gradient as charging every token the whole sequence's penalty, but other advantages."""
    import itertools

    from mmalign.rl.step import UpdateSettings, advantages_for

    torch.manual_seed(0)
    first = torch.randn(2, dtype=torch.float64, requires_grad=True)  # logits of token 1
    second = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)  # logits of token 2 | token 1
    ref_first, ref_second = torch.randn(2, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    score = torch.tensor([[0.3, -1.0], [2.0, 0.5]], dtype=torch.float64)  # Phi of (y1, y2)
    beta, n = 0.7, 2

    def token_logps(y1: int, y2: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.stack([a.log_softmax(0)[y1], b[y1].log_softmax(0)[y2]])

    seqs = list(itertools.product(range(2), range(2)))
    grads = {}
    advs = {}
    for mode in ("reward", "reward_to_go"):
        total = torch.zeros((), dtype=torch.float64)
        for pair in itertools.product(seqs, repeat=n):
            logp = torch.stack([token_logps(*y, first, second) for y in pair])  # [n, 2]
            ref = torch.stack([token_logps(*y, ref_first, ref_second) for y in pair])
            kl = (logp - ref).detach()
            scores = torch.stack([score[y] for y in pair])
            adv, _ = advantages_for(UpdateSettings(n=n, kl_mode=mode), scores, kl, torch.ones(n, 2), beta)
            weight = logp.sum().exp().detach()  # probability of the pair
            total = total + weight * (adv * logp).sum()
            if pair == (seqs[1], seqs[2]):
                advs[mode] = adv
        grads[mode] = torch.autograd.grad(total, (first, second))
    for a, b in zip(grads["reward"], grads["reward_to_go"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert grads["reward"][0].abs().max() > 1e-3  # a real gradient, not zero on both sides
    # the last token's advantage no longer carries the first token's penalty
    assert not torch.allclose(advs["reward"][:, 1], advs["reward_to_go"][:, 1])
    torch.testing.assert_close(advs["reward"][:, 0], advs["reward_to_go"][:, 0])


def test_full_kl_penalty_plus_its_direct_term_is_the_exact_gradient_of_the_objective():
    """Exact expectation over every pair of 2-token samples from a tabular policy: the exact
    per-token KL as the reward penalty (RLOO) plus beta times its direct gradient at fixed states
    (what ``update`` adds for ``kl.estimator: full``) is the gradient of E[Phi] - beta KL(pi||ref)."""
    import itertools

    from mmalign.rl.kl import token_kl
    from mmalign.rl.step import UpdateSettings, advantages_for

    torch.manual_seed(1)
    first = torch.randn(3, dtype=torch.float64, requires_grad=True)
    second = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    ref_first, ref_second = torch.randn(3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    score = torch.randn(3, 3, dtype=torch.float64)
    beta, n = 0.6, 2
    seqs = list(itertools.product(range(3), range(3)))

    def dists(y1: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [2, V]
        return torch.stack([a.log_softmax(0), b[y1].log_softmax(0)])

    def seq_logp(y, a, b) -> torch.Tensor:
        d = dists(y[0], a, b)
        return torch.stack([d[0, y[0]], d[1, y[1]]])

    total = torch.zeros((), dtype=torch.float64)
    for pair in itertools.product(seqs, repeat=n):
        logp = torch.stack([seq_logp(y, first, second) for y in pair])
        kappa = torch.stack([token_kl(dists(y[0], first, second), dists(y[0], ref_first, ref_second)) for y in pair])
        scores = torch.stack([score[y] for y in pair])
        adv, _ = advantages_for(UpdateSettings(n=n, kl_estimator="full"), scores, kappa.detach(), torch.ones(n, 2), beta)
        weight = logp.sum().exp().detach()
        total = total + weight * ((adv * logp).sum() - beta * kappa.sum())
    estimated = torch.autograd.grad(total, (first, second))

    probs = torch.stack([seq_logp(y, first, second).sum() for y in seqs]).exp()
    ref = torch.stack([seq_logp(y, ref_first, ref_second).sum() for y in seqs]).exp()
    objective = (probs * torch.stack([score[y] for y in seqs])).sum() - beta * (probs * (probs / ref).log()).sum()
    exact = torch.autograd.grad(n * objective, (first, second))
    for a, b in zip(estimated, exact):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert exact[0].abs().max() > 1e-3
