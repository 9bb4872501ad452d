"""Run directories refuse to clobber, resume, and write metrics as JSON lines."""

from __future__ import annotations

import json

import pytest

from mmalign.errors import UserError
from mmalign.utils.atomic import atomic_directory, atomic_write_text
from mmalign.utils.rundir import RunDir


def test_layout_and_metrics(tmp_path):
    run = RunDir.open(tmp_path, "r1", "a: 1\n")
    run.log_metrics(1, loss=0.5)
    run.log_metrics(2, loss=0.25, kl=float("nan"))
    assert (tmp_path / "r1/config.yaml").read_text() == "a: 1\n"
    assert (tmp_path / "r1/checkpoints").is_dir()
    lines = [json.loads(line) for line in (tmp_path / "r1/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and lines[1]["kl"] == "nan"
    run.finish()
    assert (tmp_path / "r1/DONE").exists()
    assert "finished" in (tmp_path / "r1/run.log").read_text()


def test_finished_run_needs_overwrite(tmp_path):
    RunDir.open(tmp_path, "r", "x\n").finish()
    with pytest.raises(UserError, match="--overwrite"):
        RunDir.open(tmp_path, "r", "x\n")
    with pytest.raises(UserError, match="already finished"):
        RunDir.open(tmp_path, "r", "x\n", resume=True)
    run = RunDir.open(tmp_path, "r", "y\n", overwrite=True)
    assert not (tmp_path / "r/DONE").exists() and run.path.joinpath("config.yaml").read_text() == "y\n"


def test_unfinished_run_resumes(tmp_path):
    run = RunDir.open(tmp_path, "r", "x\n")
    run.log_metrics(1, a=1)
    run.log_metrics(2, a=2)
    with pytest.raises(UserError, match="--resume"):
        RunDir.open(tmp_path, "r", "x\n")
    again = RunDir.open(tmp_path, "r", "x\n", resume=True)
    assert again.resumed
    again.truncate_metrics(1)
    assert [r["step"] for r in again.read_metrics()] == [1]


def test_resume_of_missing_run(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        RunDir.open(tmp_path, "ghost", "x\n", resume=True)


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half.bin").write_bytes(b"123")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_only_with_overwrite(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(FileExistsError):
        with atomic_directory(target) as tmp:
            (tmp / "a").write_text("2")
    assert (target / "a").read_text() == "1"
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "a").write_text("3")
    assert (target / "a").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "hello")
    assert (tmp_path / "f.txt").read_text() == "hello"
