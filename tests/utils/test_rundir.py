"""Run directories refuse to clobber, resume, lock, overwrite safely and write metrics as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmalign.errors import ConfigError, RunLockedError, UserError
from mmalign.utils.atomic import atomic_directory, atomic_write_text
from mmalign.utils.rundir import RunDir, close_open_runs, run_name_problem


@pytest.fixture(autouse=True)
def _close_runs():
    yield
    close_open_runs()  # what the CLI does on exit


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
    run.close()  # as if its process had ended without finishing
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


# --- run names, overwrite that never loses a finished run, the lock ---------------------------


def _finished(root, name: str, marker: str = "old") -> None:
    run = RunDir.open(root, name, f"{marker}: 1\n")
    (run.path / "final").mkdir()
    (run.path / "final" / "weights.bin").write_text(marker)
    run.finish()


@pytest.mark.parametrize("name", ["", ".", "..", "../victim", "a/b", "/tmp/x", "a\\b", ".hidden", "x\ny", "n" * 201])
def test_bad_run_names_are_refused_before_anything_is_written(tmp_path, name):
    assert run_name_problem(name) is not None
    with pytest.raises(ConfigError, match="run.name"):
        RunDir.open(tmp_path / "runs", name, "x\n", overwrite=True)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["run", "sft-nano_2", "a.b", "ÿ名前", "n" * 200])
def test_good_run_names(name):
    assert run_name_problem(name) is None


def test_overwrite_keeps_the_old_run_until_the_new_one_starts(tmp_path):
    _finished(tmp_path, "r")
    run = RunDir.open(tmp_path, "r", "new: 1\n", overwrite=True)
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.replaced-")]
    assert len(hidden) == 1 and (tmp_path / hidden[0] / "final" / "weights.bin").read_text() == "old"
    assert not (run.path / "DONE").exists()
    run.started()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.lock", "r"]
    run.finish()
    assert (tmp_path / "r" / "config.yaml").read_text() == "new: 1\n" and not (tmp_path / "r" / "final").exists()


def test_overwrite_that_fails_before_starting_puts_the_old_run_back(tmp_path):
    _finished(tmp_path, "r")
    with pytest.raises(RuntimeError):
        with RunDir.open(tmp_path, "r", "new: 1\n", overwrite=True) as run:
            (run.path / "calibration.bin").write_text("partial")
            raise RuntimeError("model failed to load")
    assert (tmp_path / "r" / "DONE").exists() and (tmp_path / "r" / "final" / "weights.bin").read_text() == "old"
    assert (tmp_path / "r" / "config.yaml").read_text() == "old: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.lock", "r"]


def test_a_killed_overwrite_is_rolled_back_by_the_next_open(tmp_path):
    _finished(tmp_path, "r")
    code = ("import sys, os; from mmalign.utils.rundir import RunDir; "
            "RunDir.open(sys.argv[1], 'r', 'new: 1\\n', overwrite=True); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 9
    assert any(p.name.startswith(".r.replaced-") for p in tmp_path.iterdir())  # the old run, moved aside
    with pytest.raises(UserError, match="a finished run exists"):
        RunDir.open(tmp_path, "r", "x\n")
    assert (tmp_path / "r" / "final" / "weights.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.lock", "r"]


def test_overwrite_only_replaces_run_directories(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="not a run directory"):
        RunDir.open(tmp_path, "data", "x\n", overwrite=True)
    outside = tmp_path / "outside"
    _finished(outside, "r")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "link").symlink_to(outside / "r")
    with pytest.raises(UserError, match="symbolic link"):
        RunDir.open(tmp_path / "runs", "link", "x\n", overwrite=True)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep"
    assert (outside / "r" / "final" / "weights.bin").read_text() == "old"


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    _finished(tmp_path, "r")
    with pytest.raises(UserError, match="--overwrite and --resume"):
        RunDir.open(tmp_path, "r", "x\n", overwrite=True, resume=True)
    assert (tmp_path / "r" / "DONE").exists()


def test_lock_names_the_holder_and_goes_with_its_process(tmp_path):
    run = RunDir.open(tmp_path, "r", "x\n")
    run.log_metrics(1, a=1)
    run.close()
    code = ("import sys, time; from mmalign.utils.rundir import RunDir; "
            "RunDir.open(sys.argv[1], 'r', 'x\\n', resume=True); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} is writing this run") as exc:
            RunDir.open(tmp_path, "r", "x\n", resume=True)
        assert exc.value.pid == holder.pid
        with pytest.raises(RunLockedError):
            RunDir.open(tmp_path, "r", "x\n", overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "r" / "metrics.jsonl").exists()  # the refused overwrite moved nothing
    again = RunDir.open(tmp_path, "r", "x\n", resume=True)  # the dead holder's lock is gone
    assert again.resumed and [r["step"] for r in again.read_metrics()] == [1]
    again.close()


def test_a_run_a_failed_call_left_open_in_this_process_does_not_block_the_next_call(tmp_path):
    _finished(tmp_path, "r")
    RunDir.open(tmp_path, "r", "new: 1\n", overwrite=True)  # its caller failed and never closed it
    again = RunDir.open(tmp_path, "r", "newer: 1\n", overwrite=True)
    again.close()  # this one fails too, before it starts
    assert (tmp_path / "r" / "config.yaml").read_text() == "old: 1\n"
    assert (tmp_path / "r" / "final" / "weights.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.lock", "r"]


def test_recovery_leaves_runs_whose_names_look_like_its_own_files_alone(tmp_path):
    _finished(tmp_path, "a.replaced-5")
    _finished(tmp_path, "a")
    RunDir.open(tmp_path, "a.replaced-5", "new: 1\n", overwrite=True)  # killed: ".a.replaced-5.replaced-<pid>"
    before = sorted(p.name for p in tmp_path.iterdir())
    RunDir.open(tmp_path, "a", "x\n", overwrite=True).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "a" / "config.yaml").read_text() == "old: 1\n"


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_the_next_atomic_write_removes_what_a_killed_writer_left(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".final.pid{dead}.k1ll3d.tmp"
    (stale / "model").mkdir(parents=True)
    live = tmp_path / ".final.pid1.w0rk1n.tmp"  # pid 1 is always alive: that writer is still at work
    live.mkdir()
    other = tmp_path / f".other.pid{dead}.k1ll3d.tmp"  # another target's: not this write's business
    other.mkdir()
    with atomic_directory(tmp_path / "final") as tmp:
        (tmp / "x").write_text("1")
    assert not stale.exists() and live.is_dir() and other.is_dir()
    assert (tmp_path / "final" / "x").read_text() == "1"


def test_opening_a_run_removes_every_temporary_a_killed_process_left_in_it(tmp_path):
    run = RunDir.open(tmp_path, "r", "a: 1\n")
    run.close()
    left = [run.path / ".final.abcd1234.tmp", run.path / "checkpoints" / f".step-00000004.pid{_dead_pid()}.x1y2.tmp",
            run.path / ".config.yaml.pid1.q9w8.tmp"]  # under the run's lock even a live pid's is stale
    for p in left[:2]:
        p.mkdir()
    left[2].write_text("half")
    keep = run.path / "checkpoints" / "step-00000002"
    keep.mkdir()
    again = RunDir.open(tmp_path, "r", "a: 1\n", resume=True)
    again.close()
    assert not any(p.exists() for p in left) and keep.is_dir()
