"""The divergence checks every training recipe calls."""

from __future__ import annotations

import pytest
import torch

from mmalign.errors import DivergenceError
from mmalign.training.divergence import check_finite, check_finite_weights, clip_and_check, lr_hint


def test_a_non_finite_weight_anywhere_stops_with_the_step():
    params = [torch.zeros(3), torch.ones(2, 2)]
    check_finite_weights("align", 4, "hint", params)
    params[1][1, 0] = float("inf")
    with pytest.raises(DivergenceError) as exc:
        check_finite_weights("align", 4, lr_hint("train.lr", 1e9), params)
    assert exc.value.step == 4 and exc.value.value is None
    assert str(exc.value) == ("align: training diverged at step 4: a weight is not finite; lower train.lr (now 1e+09) "
                              "and rerun with --overwrite (checkpoints from before this step are kept)")


def test_check_finite_names_the_quantity_and_its_value():
    check_finite("sft", 1, "h", loss=1.5, grad_norm=torch.tensor(2.0))
    with pytest.raises(DivergenceError, match="step 7: grad norm is nan; h"):
        check_finite("sft", 7, "h", loss=1.5, grad_norm=torch.tensor(float("nan")))


def test_clip_and_check_clips_and_stops_before_a_step_with_a_non_finite_gradient():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)  # norm 6
    norm = clip_and_check("reward", 2, "h", [p], 1.5, loss=0.7)
    assert float(norm) == pytest.approx(6.0) and float(p.grad.norm()) == pytest.approx(1.5, rel=1e-5)
    p.grad = torch.full((4,), 3.0)
    assert float(clip_and_check("reward", 2, "h", [p], 0.0, loss=0.7)) == pytest.approx(6.0)
    assert float(p.grad.norm()) == pytest.approx(6.0)  # 0: measured, not clipped
    p.grad[0] = float("nan")
    with pytest.raises(DivergenceError, match="step 3: gradient norm is nan"):
        clip_and_check("reward", 3, "h", [p], 1.5, loss=0.7)
    p.grad = torch.ones(4)
    with pytest.raises(DivergenceError, match="step 4: loss is inf"):
        clip_and_check("reward", 4, "h", [p], 1.5, loss=torch.tensor(float("inf")))
