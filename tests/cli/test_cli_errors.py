"""Malformed input through the real CLI: exit 2, one line naming the key or file:line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD = "recipe: run\nrun:\n  name: demo\n  seed: 1\n"


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


CASES = [
    # (id, yaml text or None for GOOD, overrides, expected substrings)
    ("unknown-top-key", GOOD + "trian: {}\n", [], ["unknown key 'trian'", "cfg.yaml:5"]),
    ("unknown-nested-key-did-you-mean", GOOD + "  sede: 3\n", [], ["unknown key 'run.sede'", "did you mean 'seed'", "cfg.yaml:5"]),
    ("wrong-type", "recipe: run\nrun:\n  seed: lots\n", [], ["run.seed", "cfg.yaml:3"]),
    ("out-of-range", "recipe: run\nrun:\n  seed: -4\n", [], ["run.seed", "must be >= 0", "cfg.yaml:3"]),
    ("bad-choice", "recipe: run\nrun:\n  device: tpu\n", [], ["run.device", "must be one of", "cfg.yaml:3"]),
    ("bad-yaml", "recipe: run\nrun:\n  name: [unclosed\n", [], ["cfg.yaml:", "invalid YAML"]),
    ("tab-indent-yaml", "recipe: run\nrun:\n\tname: x\n", [], ["cfg.yaml:3", "invalid YAML"]),
    ("not-a-mapping", "- a\n- b\n", [], ["cfg.yaml:1", "mapping"]),
    ("no-recipe", "run:\n  name: x\n", [], ["no 'recipe:' key"]),
    ("unknown-recipe", "recipe: algin\n", [], ["unknown recipe 'algin'"]),
    ("missing-include", "include: base.yaml\nrecipe: run\n", [], ["included file not found: base.yaml", "cfg.yaml:1"]),
    ("bad-interpolation", "recipe: run\nrun:\n  name: ${run.nope}\n", [], ["run.name", "cfg.yaml:3"]),
    ("override-without-equals", GOOD, ["run.seed"], ["bad override 'run.seed'"]),
    ("override-unknown-key", GOOD, ["run.sed=4"], ["unknown key 'run.sed'", "did you mean 'seed'"]),
    ("override-wrong-type", GOOD, ["run.seed=abc"], ["run.seed", "override 'run.seed'"]),
    ("override-out-of-range", GOOD, ["run.seed=-1"], ["must be >= 0"]),
    ("empty-name", "recipe: run\nrun:\n  name: ''\n", [], ["run.name", "must not be empty"]),
]


@pytest.mark.parametrize("text,overrides,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_check_reports_one_line(tmp_path, run_cli, text, overrides, needles):
    cfg = _write(tmp_path, text)
    code, out, err = run_cli("config", "check", cfg, *overrides)
    _assert_one_line_error(code, err, *needles)


def test_missing_config_file(tmp_path, run_cli):
    code, _, err = run_cli("config", "show", str(tmp_path / "nope.yaml"))
    _assert_one_line_error(code, err, "nope.yaml", "not found")


def test_non_utf8_config(tmp_path, run_cli):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("recipe: run\nrun:\n  name: caf\xe9\n".encode("latin-1"))
    code, _, err = run_cli("config", "check", str(path))
    _assert_one_line_error(code, err, "latin1.yaml", "UTF-8")


def test_unknown_verb_is_one_line(run_cli):
    with pytest.raises(SystemExit) as exc:
        run_cli("algn")
    assert exc.value.code == 2


def test_console_script_exits_2_without_traceback(tmp_path):
    cfg = _write(tmp_path, GOOD + "  sede: 3\n")
    proc = subprocess.run([sys.executable, "-m", "mmalign", "config", "check", cfg], capture_output=True, text=True)
    _assert_one_line_error(proc.returncode, proc.stderr, "unknown key 'run.sede'")


def test_debug_flag_shows_traceback(tmp_path):
    cfg = _write(tmp_path, GOOD + "  sede: 3\n")
    proc = subprocess.run([sys.executable, "-m", "mmalign", "--debug", "config", "check", cfg],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_usage_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmalign", "config", "show"], capture_output=True, text=True)
    _assert_one_line_error(proc.returncode, proc.stderr, "config")


@pytest.mark.parametrize("recipe,override,key", [
    ("sft", "train.batch_size=100000000", "train.batch_size"),
    ("align", "rollout.max_new_tokens=1000000000", "rollout.max_new_tokens"),
    ("evaluate_winrate", "samples_per_prompt=50000000", "samples_per_prompt"),
])
def test_a_batch_that_cannot_fit_is_refused_by_config_check(tmp_path, run_cli, recipe, override, key):
    paths = {"sft": "model: {path: m}\ndata: {path: bundled:text/sft_train}\n", "align": "model: {path: m}\nreward: {kind: bundled_text}\n"
             "data: {path: bundled:text/prompts_train}\nkl: {beta: 0.1}\n",
             "evaluate_winrate": "policy: {path: m}\nreference: {path: m}\nprompts: {path: bundled:text/prompts_eval}\n"
             "selection_reward: {kind: bundled_text}\n"}
    cfg = _write(tmp_path, f"recipe: {recipe}\n" + paths[recipe])
    code, _, err = run_cli("config", "check", cfg, override)
    _assert_one_line_error(code, err, f"override '{key}': {key}: ", "above the limit of 16,777,216")
