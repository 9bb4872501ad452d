"""Empirical calibration against a brute-force double loop."""

from __future__ import annotations

import pytest
import torch

from mmalign.align import calibrate
from mmalign.errors import DataError


def _brute(ref: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    out = torch.empty(len(cand), dtype=torch.float64)
    for j, r in enumerate(cand.tolist()):
        below = ties = 0
        for z in ref.tolist():
            below += z < r
            ties += z == r
        out[j] = (below + 0.5 * ties) / len(ref)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ragged_lists_match_brute_force_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    ks = torch.randint(1, 12, (9,), generator=g).tolist()
    ms = torch.randint(0, 7, (9,), generator=g).tolist()
    refs = [torch.randint(0, 6, (k,), generator=g).float() for k in ks]  # integer values: many ties
    cands = [torch.randint(-1, 8, (m,), generator=g).float() for m in ms]
    out = calibrate(refs, cands)
    assert isinstance(out, list) and [len(o) for o in out] == ms
    for ref, cand, got in zip(refs, cands, out):
        torch.testing.assert_close(got.double(), _brute(ref, cand))


def test_padded_tensor_with_lengths_matches_lists():
    g = torch.Generator().manual_seed(3)
    lens = [3, 8, 1, 5]
    padded = torch.randint(0, 4, (4, 8), generator=g).double()
    padded[0, 3:] = float("nan")  # padding is ignored, whatever it holds
    cands = torch.randint(0, 5, (4, 6), generator=g).double()
    out = calibrate(padded, cands, ref_lengths=lens)
    assert out.shape == (4, 6)
    for i, k in enumerate(lens):
        torch.testing.assert_close(out[i], _brute(padded[i, :k], cands[i]))


def test_integer_tensors_and_known_values():
    ref = torch.tensor([[1, 2, 2, 3]])
    cand = torch.tensor([[0, 1, 2, 3, 4]])
    out = calibrate(ref, cand)
    assert out.dtype.is_floating_point
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.125, 0.5, 0.875, 1.0]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_runs_on_gpu():
    ref = torch.randn(5, 100, device="cuda")
    cand = torch.randn(5, 7, device="cuda")
    out = calibrate(ref, cand)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), calibrate(ref.cpu(), cand.cpu()))


@pytest.mark.parametrize("refs,cands,match", [
    ([torch.tensor([1.0, float("nan")]), torch.tensor([1.0])], [torch.tensor([0.0])] * 2, "prompt 0"),
    ([torch.tensor([1.0]), torch.tensor([2.0, float("inf")])], [torch.tensor([0.0])] * 2, "prompt 1 contain NaN or inf"),
    ([torch.tensor([1.0]), torch.tensor([])], [torch.tensor([0.0])] * 2, "prompt 1 has no reference rewards"),
    ([torch.tensor([1.0])], [torch.tensor([0.0])] * 2, "1 prompts but rewards for 2"),
    ([torch.tensor([1.0]), torch.tensor([1.0])], [torch.tensor([0.0]), torch.tensor([float("nan")])], "rewards of prompt 1"),
    ([torch.ones(2, 2)], [torch.tensor([0.0])], "must be 1-D"),
])
def test_bad_inputs_raise_data_errors_naming_the_prompt(refs, cands, match):
    with pytest.raises(DataError, match=match):
        calibrate(refs, cands)


def test_padded_length_errors():
    with pytest.raises(DataError, match="exceeds the padded width"):
        calibrate(torch.zeros(2, 3), torch.zeros(2, 1), ref_lengths=[3, 4])
    with pytest.raises(DataError, match="prompt 1 has no reference"):
        calibrate(torch.zeros(2, 3), torch.zeros(2, 1), ref_lengths=[3, 0])
    with pytest.raises(DataError, match=r"\[prompts, M\]"):
        calibrate(torch.zeros(2, 3), torch.zeros(2))
