"""Broken model folders, data files and unwritable outputs through the real CLI: exit 2, one line,
naming the config key and the offending file (not a traceback)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tests.cli.errors import one_line

ROOT = Path(__file__).resolve().parents[2]


def _broken(src: Path, dst: Path, kind: str) -> Path:
    """A copy of the checkpoint ``src`` broken in one way."""
    if kind == "empty":
        dst.mkdir()
        return dst
    shutil.copytree(src, dst)
    if kind == "truncated-weights":
        data = (dst / "model.safetensors").read_bytes()
        (dst / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "corrupt-config":
        (dst / "config.json").write_text('{"model_type": ', encoding="utf-8")
    elif kind == "no-config":
        (dst / "config.json").unlink()
    elif kind == "no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (dst / name).unlink()
    elif kind == "corrupt-tokenizer":
        (dst / "tokenizer.json").write_text('{"version": ', encoding="utf-8")
    return dst


def _decode_config(tmp_path: Path, model: Path, data: str = "bundled:text/prompts_eval") -> str:
    path = tmp_path / "decode.yaml"
    path.write_text(f"""recipe: decode
run: {{name: d, output_dir: {tmp_path / 'runs'}, seed: 0, device: cpu, dtype: float32}}
model: {{path: {model}, chat_template: "off"}}
data: {{path: "{data}", max_rows: 2}}
decode: {{method: sample, n: 2, max_new_tokens: 2, batch_size: 2}}
""")
    return str(path)


# (kind, the file the error must name, relative to the broken folder; what it must say)
BROKEN = [
    ("truncated-weights", "model.safetensors", "corrupt or truncated safetensors file"),
    ("corrupt-config", "config.json", "invalid JSON (line 1"),
    ("no-config", "", "no config.json"),
    ("empty", "", "the checkpoint folder is empty"),
    ("no-tokenizer", "", "no tokenizer files"),
    ("corrupt-tokenizer", "tokenizer.json", "cannot load the tokenizer: invalid JSON"),
]


@pytest.mark.parametrize("kind,culprit,problem", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_model_folder_is_one_line_naming_the_file(tmp_path, run_cli, tiny_llama_dir, kind, culprit, problem):
    bad = _broken(tiny_llama_dir, tmp_path / "bad", kind)
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, bad))
    line = one_line(code, err, "model.path: ", problem)
    assert f"{bad / culprit if culprit else bad}:" in line
    assert not (tmp_path / "runs" / "d" / "DONE").exists()


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return str(tmp_path / name)


def test_every_verb_that_loads_a_model_names_its_key_and_file(tmp_path, run_cli, tiny_llama_dir):
    bad = _broken(tiny_llama_dir, tmp_path / "bad", "truncated-weights")
    weights = f"{bad / 'model.safetensors'}: "
    good = tiny_llama_dir
    run = f"run: {{output_dir: {tmp_path / 'runs'}, device: cpu, dtype: float32}}\n"  # run.name: the verb's
    sft = _write(tmp_path, "sft.yaml", f"recipe: sft\n{run}model: {{path: {bad}}}\n"
                 "data: {path: bundled:text/sft_train, max_rows: 8}\ntrain: {steps: 1, batch_size: 2, max_seq_len: 64}\n")
    one_line(*run_cli("-q", "sft", sft, "run.name=sft")[::2], "model.path: ", weights)
    distill = _write(tmp_path, "distill.yaml", f"recipe: distill\n{run}model: {{path: {good}}}\n"
                     f"teacher: {{path: {bad}}}\ndata: {{path: bundled:text/sft_train, max_rows: 8}}\n"
                     "train: {steps: 1, batch_size: 2, max_seq_len: 64}\n")
    one_line(*run_cli("-q", "distill", distill, "run.name=distill")[::2], "teacher.path: ", weights)
    winrate = _write(tmp_path, "winrate.yaml", f"recipe: evaluate_winrate\n{run}policy: {{path: {good}}}\n"
                     f"reference: {{path: {bad}}}\nprompts: {{path: bundled:text/prompts_eval, max_rows: 2}}\n"
                     "selection_reward: {kind: bundled_text}\n")
    one_line(*run_cli("-q", "evaluate", "winrate", winrate, "run.name=winrate")[::2], "reference.path: ", weights)
    align = _write(tmp_path, "align.yaml", f"recipe: align\n{run}model: {{path: {bad}}}\nreward: {{kind: bundled_text}}\n"
                   "data: {path: bundled:text/prompts_train, max_rows: 4}\nkl: {beta: 0.1}\n")
    one_line(*run_cli("-q", "align", align, "run.name=align")[::2], "model.path: ", weights)
    one_line(*run_cli("-q", "reward", str(ROOT / "configs" / "reward" / "bt_bundled.yaml"),
                       f"run.output_dir={tmp_path / 'runs'}", f"model.path={bad}")[::2], "model.path: ", weights)
    one_line(*run_cli("-q", "evaluate", "mmlu", "--model", str(bad), "--data",
                       str(ROOT / "mmalign" / "data" / "bundled" / "mmlu_sample"), "--limit", "1")[::2], weights)
    one_line(*run_cli("-q", "export", "--checkpoint", str(bad), "--format", "onnx", "--out",
                       str(tmp_path / "exported"))[::2], "--checkpoint: ", weights)
    assert not (tmp_path / "exported").exists()


def test_a_broken_tokenizer_folder_is_blamed_on_model_tokenizer(tmp_path, run_cli, tiny_llama_dir):
    bad = _broken(tiny_llama_dir, tmp_path / "bad", "corrupt-tokenizer")
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, tiny_llama_dir), f"model.tokenizer={bad}")
    one_line(code, err, f"model.tokenizer: {bad / 'tokenizer.json'}: ", "invalid JSON")


def test_a_deeply_nested_json_line_names_the_file_and_line(tmp_path, run_cli, tiny_llama_dir):
    data = tmp_path / "deep.jsonl"
    data.write_text('{"prompt": "Human: hi\\n\\nAssistant:"}\n{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, tiny_llama_dir, str(data)))
    one_line(code, err, f"{data}:2: ", "nested too deeply")


def test_an_absurd_sample_count_is_refused_before_any_allocation(tmp_path, run_cli, tiny_llama_dir):
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, tiny_llama_dir), "decode.n=100000000")
    one_line(code, err, "override 'decode.n'", "decode.n: ", "above the limit of 16,777,216")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_an_unwritable_output_dir_isone_line(tmp_path, run_cli, tiny_llama_dir):
    out = tmp_path / "runs"
    out.mkdir(mode=0o500)
    try:
        code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, tiny_llama_dir))
    finally:
        out.chmod(0o700)
    one_line(code, err, str(out))


def test_a_write_the_machine_refuses_is_one_line_naming_the_file(tmp_path, run_cli, tiny_llama_dir, monkeypatch):
    """Permission denied (or a full disk) on any write, in any verb: the CLI prints the file (this
    one is simulated, so that it also fails for root)."""
    import mmalign.utils.rundir as rundir

    def refuse(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(rundir, "atomic_write_text", refuse)
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, tiny_llama_dir))
    one_line(code, err, f"{tmp_path / 'runs' / 'd' / 'config.yaml'}: Permission denied")


def test_a_bundled_name_cannot_leave_the_bundled_data(tmp_path, run_cli, tiny_llama_dir):
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"prompt": "Human: hi\\n\\nAssistant:"}\n')
    rel = os.path.relpath(outside.with_suffix(""), ROOT / "mmalign" / "data" / "bundled")
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, tiny_llama_dir, f"bundled:{rel}"))
    one_line(code, err, f"unknown bundled dataset 'bundled:{rel}'")
    assert not (tmp_path / "runs").exists()
