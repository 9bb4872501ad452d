"""Metrics across processes: what one process logs is its own values, unchanged; with several,
the mean (accelerate's reduce) and one checksum per process (accelerate's gather). The real
two-process runs: tests/recipes/test_align.py::test_two_processes_keep_parameters_in_sync."""

from __future__ import annotations

import pytest
import torch

from mmalign.training import metrics


class OneProcess:
    num_processes = 1
    device = torch.device("cpu")

    def reduce(self, *_):
        raise AssertionError("one process communicates nothing")

    gather = reduce


class TwoProcesses:
    """Process 0 of two; the other process holds ``other`` (the same keys, in sorted order)."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, other: torch.Tensor):
        self.other, self.reductions = other, []

    def reduce(self, vec, reduction):
        self.reductions.append(reduction)
        return (vec + self.other) / 2

    def gather(self, vec):
        return torch.cat([vec, self.other])


def test_one_process_logs_its_values_as_floats_unchanged():
    values = {"kl": torch.tensor(0.1, dtype=torch.float32), "reward": 2.5, "entropy": torch.tensor([1.25])}
    out = metrics.mean_over_processes(OneProcess(), values)
    assert out == {"entropy": 1.25, "kl": float(torch.tensor(0.1, dtype=torch.float32)), "reward": 2.5}
    assert all(type(v) is float for v in out.values())


def test_several_processes_log_the_mean_of_each_metric():
    acc = TwoProcesses(torch.tensor([3.0, 0.0], dtype=torch.float64))  # "a", "b" on the other process
    assert metrics.mean_over_processes(acc, {"b": 4.0, "a": 1.0}) == {"a": 2.0, "b": 2.0}
    assert acc.reductions == ["mean"]


def test_the_checksum_tells_moved_weights_apart_and_has_one_entry_per_process():
    a = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[0.5, -1.0]])]
    swapped = [torch.tensor([3.0, 2.0, 1.0]), a[1]]  # the same plain sum, other positions
    assert metrics.param_checksum(a) == metrics.param_checksum([t.clone() for t in a])
    assert metrics.param_checksum(a) != metrics.param_checksum(swapped)
    assert metrics.param_checksum(a) == pytest.approx(1 * 1 + 2 * 2 + 3 * 3 + 0.5 * 1 - 1.0 * 2)
    assert metrics.checksums_per_process(OneProcess(), a) == [metrics.param_checksum(a)]
    assert metrics.checksums_per_process(TwoProcesses(torch.tensor([7.0], dtype=torch.float64)), a) == [
        metrics.param_checksum(a), 7.0]


def test_one_process_gathers_its_own_list():
    items = [(0, [0.5]), (3, [1.0])]
    assert metrics.gather_lists(OneProcess(), items) is items
