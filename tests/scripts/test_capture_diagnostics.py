"""`scripts/capture_diagnostics.py`: the exact discrete optimum behind its `ties` check."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mmalign.align.procedures import Procedure
from tests.scripts.loading import load_script


@pytest.fixture(scope="module")
def diagnostics():
    return load_script("capture_diagnostics")


def _enumerated_win_rate(values: np.ndarray, p: np.ndarray, procedure: Procedure) -> float:
    """Every draw of N policy and N reference samples, kept by the procedure, ties half."""
    keep = max if procedure.name == "bon" else min
    q = np.full(len(values), 1 / len(values))
    total = 0.0
    for pol in itertools.product(range(len(values)), repeat=procedure.n):
        for ref in itertools.product(range(len(values)), repeat=procedure.n):
            a, b = keep(values[i] for i in pol), keep(values[j] for j in ref)
            total += np.prod(p[list(pol)]) * np.prod(q[list(ref)]) * ((a > b) + 0.5 * (a == b))
    return total


@pytest.mark.parametrize("procedure", [Procedure("bon", 2), Procedure("won", 2), Procedure("bon", 3)])
def test_kept_win_rate_equals_enumeration_with_ties(diagnostics, procedure):
    values = np.array([0.3, 1.0, 0.3, 2.0])  # two samples tie
    p = np.array([0.1, 0.2, 0.3, 0.4])
    assert diagnostics._kept_win_rate(values, p, procedure) == pytest.approx(
        _enumerated_win_rate(values, p, procedure), abs=1e-12)
    assert diagnostics._kept_win_rate(values, np.full(4, 0.25), procedure) == pytest.approx(0.5, abs=1e-12)


def test_ties_without_ties_matches_the_continuous_calculus(diagnostics, tmp_path, capsys):
    rng = np.random.default_rng(0)
    groups, k = 8, 512
    values = torch.from_numpy(rng.random(groups * k))
    save_file({"values": values, "offsets": torch.arange(0, groups * k + 1, k)}, str(tmp_path / "store.safetensors"))
    diagnostics.ties(tmp_path / "store.safetensors", "exp:6.5", Procedure("bon", 4), kls=(0.5,))
    out = capsys.readouterr().out
    assert "0% of samples repeat" in out
    kl, ratio = map(float, re.search(r"KL ([\d.]+) .*ratio of gains ([\d.]+)", out).groups())
    assert kl == pytest.approx(0.5, abs=1e-3)
    assert 0.98 < ratio < 1.005  # K = 512 distinct samples: the optimum of the samples is the calculus's


def test_response_shape_bins_lengths_and_counts_distinct_top_texts(diagnostics, capsys):
    from types import SimpleNamespace

    # two prompts x 4 responses: c, token count and text per response
    cs = np.array([[0.05, 0.95, 0.95, 0.5], [0.92, 0.97, 0.15, 0.55]])
    lengths = torch.tensor([[3, 1, 1, 9], [2, 4, 6, 7]]).reshape(-1)
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    texts = ["a", "top", "top", "mid", "x", "y", "low", "mid"]
    diagnostics.response_shape("policy", cs, [SimpleNamespace(response_mask=mask, texts=texts)], np.linspace(0, 1, 3))
    out = capsys.readouterr().out
    # bin 0-.5: lengths 3 and 6; bin .5-1: 1, 1, 9, 2, 4, 7; top-bin distinct texts: {top, mid}, {x, y, mid}
    assert re.search(r"policy tokens\s+4\.50\s+4\.00\s+\(top bin: 2\.5 distinct texts of 3\.0 per prompt\)", out), out
