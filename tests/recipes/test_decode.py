"""``mmalign decode`` through the real CLI: outputs, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["The quick brown", "Best-of-N", "Human: hi"]))
    return path


def write_config(tmp_path, model_dir, prompts, method="best_of_n") -> str:
    path = tmp_path / "decode.yaml"
    path.write_text(f"""recipe: decode
run: {{name: dec, output_dir: {tmp_path / 'runs'}, device: cpu, dtype: float32}}
model: {{path: {model_dir}}}
data: {{path: {prompts}}}
decode: {{method: {method}, n: 4, max_new_tokens: 6, batch_size: 2}}
reward: {{kind: python, function: "tests.recipes.test_decode:length_reward"}}
""", encoding="utf-8")
    return str(path)


def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


@pytest.mark.parametrize("method", ["best_of_n", "worst_of_n", "blockwise", "sample"])
def test_decode_writes_choices(run_cli, tiny_llama_dir, prompts_file, tmp_path, method):
    code, out, err = run_cli("decode", write_config(tmp_path, tiny_llama_dir, prompts_file, method), "-q")
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "runs" / "dec" / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["candidates"]) == 4 for r in rows)
    for r in rows:
        assert r["response"] == r["candidates"][r["index"]]
        if method == "best_of_n":
            assert r["reward"] == max(r["rewards"]) == len(r["response"])
        if method == "worst_of_n":
            assert r["reward"] == min(r["rewards"])


def _one_line_error(run_cli, *argv) -> str:
    code, out, err = run_cli(*argv)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_prompt_longer_than_context(run_cli, tiny_llama_dir, tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "beep tone " * 600}) + "\n")
    err = _one_line_error(run_cli, "decode", write_config(tmp_path, tiny_llama_dir, path))
    assert "prompt 1 has" in err and "model.truncation=left" in err
    assert not (tmp_path / "runs" / "dec").exists()


def test_empty_prompt_file(run_cli, tiny_llama_dir, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    err = _one_line_error(run_cli, "decode", write_config(tmp_path, tiny_llama_dir, path))
    assert "empty.jsonl" in err


def test_n_below_one(run_cli, tiny_llama_dir, prompts_file, tmp_path):
    err = _one_line_error(run_cli, "decode", write_config(tmp_path, tiny_llama_dir, prompts_file), "decode.n=0")
    assert "decode.n: must be >= 1" in err


def test_missing_checkpoint_directory(run_cli, prompts_file, tmp_path):
    err = _one_line_error(run_cli, "decode", write_config(tmp_path, tmp_path / "runs" / "gone" / "final", prompts_file))
    assert "checkpoint directory not found" in err
