"""Config errors name where the final value was set (top file over includes, overrides over both)
and YAML alias bombs fail fast: through ``mmalign config check``."""

from __future__ import annotations

import time
from pathlib import Path

WINRATE = """recipe: evaluate_winrate
policy: {path: m}
reference: {path: m}
prompts: {path: bundled:text/prompts_eval}
selection_reward: {kind: bundled_text}
procedures:
  - {name: standard, n: 1}
  - {name: bon, n: 4}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return str(tmp_path / name)


def _one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_value_the_top_file_sets_is_blamed_on_the_top_file(tmp_path, run_cli):
    _write(tmp_path, "base.yaml", "recipe: run\nrun:\n  name: base\n  seed: 1\n")
    top = _write(tmp_path, "top.yaml", "include: base.yaml\nrun:\n  seed: -4\n")
    line = _one_line(*run_cli("config", "check", top)[::2])
    assert f"{top}:3: run.seed: must be >= 0" in line


def test_a_value_only_the_include_sets_is_blamed_on_the_include(tmp_path, run_cli):
    base = _write(tmp_path, "base.yaml", "recipe: run\nrun:\n  name: base\n  seed: -4\n")
    top = _write(tmp_path, "top.yaml", "include: base.yaml\nrun:\n  name: top\n")
    line = _one_line(*run_cli("config", "check", top)[::2])
    assert f"{base}:4: run.seed: must be >= 0" in line


def test_a_list_override_is_blamed_on_the_override_not_a_line_of_the_file(tmp_path, run_cli):
    cfg = _write(tmp_path, "winrate.yaml", WINRATE)
    line = _one_line(*run_cli("config", "check", cfg, "procedures=[{name: bon, n: 0}]")[::2])
    assert "override 'procedures': procedures.0.n: must be >= 1" in line and "winrate.yaml" not in line
    # a list the top file replaces drops the included list's lines too
    _write(tmp_path, "base.yaml", WINRATE)
    top = _write(tmp_path, "top.yaml", "include: base.yaml\nprocedures: [{name: bon}, {name: won, n: 0}]\n")
    line = _one_line(*run_cli("config", "check", top)[::2])
    assert f"{top}:2: procedures.1.n: must be >= 1" in line


def test_a_billion_laughs_yaml_fails_fast_with_one_line(tmp_path, run_cli):
    rows = ['lol0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    cfg = _write(tmp_path, "laughs.yaml", "recipe: run\n" + "\n".join(rows) + "\n")
    started = time.perf_counter()
    line = _one_line(*run_cli("config", "check", cfg)[::2])
    assert time.perf_counter() - started < 5
    assert f"{cfg}: its YAML aliases expand to " in line and "above the limit of 100,000" in line


def test_ordinary_anchors_still_work(tmp_path, run_cli):
    cfg = _write(tmp_path, "anchors.yaml", "recipe: run\nbase: &b {name: shared, seed: 3}\nrun: *b\n")
    code, _, err = run_cli("config", "check", cfg)
    assert "unknown key 'base'" in err  # the alias expanded; only the extra top-level key is refused
    cfg = _write(tmp_path, "anchors2.yaml", "recipe: run\nrun: &b {name: shared, seed: 3}\n")
    assert run_cli("config", "check", cfg)[0] == 0
