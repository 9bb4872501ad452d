"""Transform registry: values, vectorisation on numpy and torch, parameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmalign.align import get_transform
from mmalign.align.transforms import tabulated
from mmalign.errors import UserError


def test_values_match_definitions():
    c = np.linspace(0.01, 1.0, 7)
    np.testing.assert_allclose(get_transform("identity")(c), c)
    np.testing.assert_allclose(get_transform("log")(c), np.log(c))
    np.testing.assert_allclose(get_transform("power", k=2.5)(c), c**2.5)
    t = 3.0
    np.testing.assert_allclose(get_transform("exp", t=t)(c), np.expm1(t * c) / np.expm1(t), rtol=1e-12)
    np.testing.assert_allclose(get_transform("neg_exp", t=t)(c),
                               (1 - np.exp(-t * c)) / (1 - np.exp(-t)), rtol=1e-12)


@pytest.mark.parametrize("name,params", [("exp", {"t": 500.0}), ("neg_exp", {"t": 500.0}),
                                         ("exp", {"t": 1e-3}), ("neg_exp", {"t": 1e-3})])
def test_normalised_exp_maps_onto_unit_interval_without_overflow(name, params):
    phi = get_transform(name, **params)
    c = np.linspace(0, 1, 1001)
    v = phi(c)
    assert np.all(np.isfinite(v))
    assert v[0] == pytest.approx(0.0, abs=1e-12) and v[-1] == pytest.approx(1.0, rel=1e-12)
    assert np.all(np.diff(v) >= 0)


def test_torch_and_numpy_agree():
    c = torch.rand(50, dtype=torch.float64)
    for name, params in [("identity", {}), ("log", {}), ("exp", {"t": 7.0}),
                         ("neg_exp", {"t": 7.0}), ("power", {"k": 0.5})]:
        phi = get_transform(name, **params)
        out = phi(c)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_allclose(out.numpy(), phi(c.numpy()), rtol=1e-12)


def test_tabulated_interpolates_on_torch_and_numpy():
    grid = np.linspace(0, 1, 11)
    phi = tabulated("optimal", grid, grid**2)
    x = np.array([0.05, 0.5, 0.95])
    expected = np.interp(x, grid, grid**2)
    np.testing.assert_allclose(phi(x), expected)
    np.testing.assert_allclose(phi(torch.tensor(x)).numpy(), expected)


@pytest.mark.parametrize("name,params,match", [
    ("identity", {"t": 3.0}, "takes no parameter t"),
    ("exp", {}, "needs parameter t"),
    ("exp", {"t": -1.0}, "positive"),
    ("exp", {"t": 1e4}, "at most"),
    ("power", {"t": 1.0, "k": 2.0}, "takes no parameter t"),
    ("expo", {}, "did you mean 'exp'"),
    ("optimal", {}, "optimal_transform"),
])
def test_bad_parameters_are_user_errors(name, params, match):
    with pytest.raises(UserError, match=match):
        get_transform(name, **params)


def test_exp_small_t_tends_to_identity():
    c = np.linspace(0, 1, 11)
    assert np.max(np.abs(get_transform("exp", t=1e-3)(c) - c)) < 1e-3
    assert math.isclose(get_transform("neg_exp", t=1e-3)(0.5), 0.5, abs_tol=1e-3)
