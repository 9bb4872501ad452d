"""The divergence checks every training recipe calls."""

from __future__ import annotations

import pytest
import torch

from mmalign.errors import DivergenceError
from mmalign.utils.divergence import check_finite, check_finite_weights, lr_hint


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
