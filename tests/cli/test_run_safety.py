"""Run directories through the real CLI: names are one path component, ``--overwrite`` never loses
a finished run to a failed new one, and a second writer is refused while the first one lives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.errors import one_line

ROOT = Path(__file__).resolve().parents[2]
REWARD_CONFIG = ROOT / "configs" / "reward" / "bt_bundled.yaml"
HUGE_PAYOFFS = ("game.name=custom", "game.payoff1=[[1e308,-1e308],[1e308,-1e308]]",
                "game.payoff2=[[1e308,1e308],[-1e308,-1e308]]")


def _games_config(tmp_path: Path, output_dir: Path, name: str = "t") -> str:
    path = tmp_path / f"games-{name}.yaml"
    path.write_text("recipe: games\n"
                    f"run: {{name: {name}, output_dir: {output_dir}}}\n"
                    "train: {seeds: 8, steps: 4, log_every: 2}\nanalysis: {plots: false}\n")
    return str(path)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad", ["../victim", ".", "ABSOLUTE", "", "a/b"])
def test_a_run_name_that_is_a_path_deletes_nothing(tmp_path, run_cli, bad):
    runs = tmp_path / "runs"
    assert run_cli("-q", "games", "run", _games_config(tmp_path, tmp_path, "victim"))[0] == 0
    assert run_cli("-q", "games", "run", _games_config(tmp_path, runs, "keep"))[0] == 0
    cfg = _games_config(tmp_path, runs)
    before = _snapshot(tmp_path)
    name = str(tmp_path / "victim") if bad == "ABSOLUTE" else bad
    code, _, err = run_cli("-q", "games", "run", cfg, f"run.name={name}", "--overwrite")
    one_line(code, err, "run.name")
    assert _snapshot(tmp_path) == before  # the sibling, the output dir and its finished run are untouched


def test_resume_with_overwrite_is_refused_before_any_work(tmp_path, run_cli):
    code, _, err = run_cli("games", "run", _games_config(tmp_path, tmp_path / "runs"), "--resume", "--overwrite")
    one_line(code, err, "--overwrite and --resume")
    assert not (tmp_path / "runs").exists()


def test_a_new_run_that_fails_to_load_keeps_the_finished_run(tmp_path, run_cli):
    args = ("-q", "reward", str(REWARD_CONFIG), f"run.output_dir={tmp_path}", "run.name=r", "data.train.max_rows=48",
            "data.eval.max_rows=16", "model.toy.hidden_size=16", "model.toy.vocab_size=300", "train.batch_size=8",
            "train.max_steps=2", "train.max_length=64")
    assert run_cli(*args)[0] == 0
    before = _snapshot(tmp_path / "r")
    assert "DONE" in before and "final/model.safetensors" in before
    # the reward model is loaded after the run directory is opened
    code, _, err = run_cli(*args, f"model.path={tmp_path / 'no-such-model'}", "--overwrite")
    one_line(code, err, "model.path", "no-such-model")
    assert _snapshot(tmp_path / "r") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.lock", "r"]  # nothing moved aside is left over
    # an overwrite that starts cleanly does replace it
    assert run_cli(*args, "train.max_steps=1", "--overwrite")[0] == 0
    assert _snapshot(tmp_path / "r")["final/model.safetensors"] != before["final/model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.lock", "r"]


def test_a_new_run_that_diverges_before_its_first_metrics_keeps_the_finished_run(tmp_path, run_cli):
    cfg = _games_config(tmp_path, tmp_path / "runs")
    assert run_cli("-q", "games", "run", cfg)[0] == 0
    before = _snapshot(tmp_path / "runs")
    code, _, err = run_cli("-q", "games", "run", cfg, *HUGE_PAYOFFS, "--overwrite")
    one_line(code, err, "training diverged")
    assert _snapshot(tmp_path / "runs") == before


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path, run_cli):
    cfg = _games_config(tmp_path, tmp_path / "runs")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    first = subprocess.Popen([sys.executable, "-m", "mmalign", "-q", "games", "run", cfg, "train.steps=100000000"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = tmp_path / "runs" / "t" / "config.yaml"
    try:
        deadline = time.time() + 120
        while not started.exists():
            assert first.poll() is None, first.stderr.read().decode()
            assert time.time() < deadline, "the first writer did not open its run in time"
            time.sleep(0.05)
        for flags in ((), ("--resume",), ("--overwrite",)):
            code, _, err = run_cli("-q", "games", "run", cfg, *flags)
            one_line(code, err, f"pid {first.pid} is writing this run")
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not (tmp_path / "runs" / "t" / "DONE").exists()
    # the killed writer's lock went with it: its unfinished run can be resumed
    code, _, err = run_cli("-q", "games", "run", cfg, "--resume")
    assert code == 0, err
    assert (tmp_path / "runs" / "t" / "DONE").exists()


def test_align_overwrite_that_fails_in_calibration_keeps_the_finished_run(tmp_path, run_cli, tiny_llama_dir):
    nan = tmp_path / "nan.py"
    nan.write_text("def reward(prompts, responses):\n    return [float('nan') for _ in responses]\n")
    cfg = tmp_path / "align.yaml"
    cfg.write_text(f"""recipe: align
run: {{name: a, output_dir: {tmp_path / 'runs'}, device: cpu, dtype: float32}}
model: {{path: {tiny_llama_dir}}}
reward: {{kind: bundled_text}}
data: {{path: "bundled:text/prompts_train", max_rows: 4}}
calibration: {{num_samples: 2, batch_prompts: 4}}
transform: {{name: identity}}
rollout: {{prompts_per_step: 2, n: 2, max_new_tokens: 2}}
kl: {{beta: 0.1}}
train: {{steps: 1}}
checkpoint: {{every: 1, keep: 1}}
""")
    assert run_cli("-q", "align", str(cfg))[0] == 0
    before = _snapshot(tmp_path / "runs")
    assert "a/DONE" in before and "a/final/model.safetensors" in before
    code, _, err = run_cli("-q", "align", str(cfg), "reward.kind=python", f"reward.function={nan}:reward", "--overwrite")
    one_line(code, err, "calibration: reward", "non-finite score (nan)")
    assert _snapshot(tmp_path / "runs") == before
