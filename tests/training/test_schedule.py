"""The one LR schedule factory: align's factors bit for bit, sft/distill's warm-up, reward's cosine."""

from __future__ import annotations

import math

import pytest
import torch

from mmalign.training.schedule import make_scheduler, optimizer_step


def align_factor(schedule: str, warmup: int, total: int, step: int) -> float:
    """The factor recipes/align.py's ``_lr_lambda`` gave before training/ existed (the study's runs)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "linear":
        return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))
    return 1.0


def lrs(schedule: str, warmup: int, total: int, base: float, steps: int, groups: int = 1, **kw) -> list[list[float]]:
    """Every parameter group's learning rate at each optimizer step, stepping like a training loop."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    opt = torch.optim.AdamW([{"params": [p], "lr": base * (i + 1)} for i, p in enumerate(params)], lr=base)
    sched = make_scheduler(opt, schedule, warmup_steps=warmup, total_steps=total, **kw)
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule", ["constant", "linear"])
@pytest.mark.parametrize("warmup,total", [(0, 1), (0, 7), (0, 300), (1, 5), (3, 7), (4, 40), (20, 300), (9, 9)])
def test_align_schedules_are_bit_identical_to_the_old_lambda(schedule, warmup, total):
    base = 5.0e-4 * math.sqrt(0.5)  # a study learning rate; two groups as with a GAE value model
    got = lrs(schedule, warmup, total, base, total + 2, groups=2)
    for step, row in enumerate(got):
        for i, lr in enumerate(row):
            assert lr == base * (i + 1) * align_factor(schedule, warmup, total, step), (step, i)


@pytest.mark.parametrize("warmup", [0, 1, 10])
def test_constant_is_what_sft_and_distill_trained_at(warmup):
    """``models/finetune.py``'s old ``lr_at``: linear warm-up to ``lr``, then constant."""
    base = 5.0e-3
    for step, (lr,) in enumerate(lrs("constant", warmup, 30, base, 30)):
        assert lr == (base * min(1.0, (step + 1) / warmup) if warmup else base)


def test_cosine_warms_up_then_decays_to_its_floor_at_the_last_step():
    base, warmup, total = 1e-3, 4, 20
    got = [row[0] for row in lrs("cosine", warmup, total, base, total, min_lr_ratio=0.1)]
    assert got[:warmup] == pytest.approx([base * (s + 1) / warmup for s in range(warmup)])
    decay = got[warmup - 1:]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert got[-1] == pytest.approx(0.1 * base)
    mid = warmup + (total - warmup) // 2 - 1  # progress 1/2: halfway between lr and the floor
    assert got[mid] == pytest.approx(base * (0.1 + 0.9 * 0.5))


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_a_restored_scheduler_continues_with_the_same_rates(schedule):
    def build():
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, make_scheduler(opt, schedule, warmup_steps=3, total_steps=12, min_lr_ratio=0.1)

    opt, sched = build()
    for _ in range(5):
        opt.step()
        sched.step()
    state_opt, state_sched = opt.state_dict(), sched.state_dict()
    expected = []
    for _ in range(5):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    opt2, sched2 = build()
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    got = []
    for _ in range(5):
        got.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert got == expected


def test_an_unknown_schedule_is_refused():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="unknown schedule 'cosinus'"):
        make_scheduler(opt, "cosinus", warmup_steps=0, total_steps=3)


def test_optimizer_step_trains_at_the_scheduled_rate_then_advances_it():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, "constant", warmup_steps=4, total_steps=8)
    used = []
    for _ in range(3):
        p.grad = torch.ones(1)
        used.append(optimizer_step(opt, sched))
        assert p.grad is None
    assert used == [0.25, 0.5, 0.75] and float(p) == -1.5 and opt.param_groups[0]["lr"] == 1.0
