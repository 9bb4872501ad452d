"""Environment values are used by the run but never written: config snapshot, run.log, metrics,
reports; and never become a run path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.utils import secrets
from mmalign.utils.rundir import RunDir

SECRET = "hf_s3cr3t_t0k3n_value"


def _decode_config(tmp_path: Path, model: str, run: str = "name: d") -> str:
    path = tmp_path / "decode.yaml"
    path.write_text(f"""recipe: decode
run: {{{run}, output_dir: {tmp_path / 'runs'}, device: cpu, dtype: float32}}
model: {{path: "{model}", chat_template: "off"}}
data: {{path: "bundled:text/prompts_eval", max_rows: 1}}
decode: {{method: sample, n: 1, max_new_tokens: 2, batch_size: 1}}
""")
    return str(path)


def _all_text(root: Path) -> str:
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in root.rglob("*") if p.is_file()
                   and p.suffix in ("", ".yaml", ".log", ".jsonl", ".json", ".md"))


def test_an_environment_value_is_used_but_written_unresolved(tmp_path, run_cli, tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("MMALIGN_TEST_MODEL_DIR", str(tiny_llama_dir))
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, "${oc.env:MMALIGN_TEST_MODEL_DIR}"))
    assert code == 0, err  # the model was found through the environment
    run = tmp_path / "runs" / "d"
    config = (run / "config.yaml").read_text()
    assert "path: ${oc.env:MMALIGN_TEST_MODEL_DIR}" in config and str(tiny_llama_dir) not in config
    assert str(tiny_llama_dir) not in _all_text(run)


def test_run_log_metrics_and_reports_redact_environment_values(tmp_path):
    secrets.register("MMALIGN_TEST_TOKEN", SECRET)
    run = RunDir.open(tmp_path, "r", "a: 1\n")
    run.logger.info("calling the judge with %s", SECRET)
    run.log_metrics(1, note=f"token={SECRET}")
    from mmalign.utils.atomic import atomic_write_text

    atomic_write_text(run.path / "report.md", f"# report\nused {SECRET}\n")
    run.finish()
    text = _all_text(run.path)
    assert SECRET not in text
    assert text.count("${oc.env:MMALIGN_TEST_TOKEN}") == 3


@pytest.mark.parametrize("where", ["file-name", "override-output-dir"])
def test_a_run_path_never_comes_from_the_environment(tmp_path, run_cli, tiny_llama_dir, monkeypatch, where):
    monkeypatch.setenv("MMALIGN_TEST_TOKEN", SECRET)
    if where == "file-name":
        cfg, extra, key = _decode_config(tmp_path, str(tiny_llama_dir), "name: 'run-${oc.env:MMALIGN_TEST_TOKEN}'"), (), "run.name"
    else:
        cfg, extra, key = _decode_config(tmp_path, str(tiny_llama_dir)), ("run.output_dir=${oc.env:MMALIGN_TEST_TOKEN}",), "run.output_dir"
    code, _, err = run_cli("-q", "decode", cfg, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"{key}: takes a value from the environment" in lines[0], err
    assert SECRET not in err and not (tmp_path / "runs").exists() and not list(tmp_path.rglob(f"*{SECRET}*"))
