"""MMLU data loading (CSV tree, JSONL, HF) and one-line errors for bad data through the real CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from mmalign.errors import DataError
from mmalign.evaluation.mmlu.data import load_mmlu, sample_dir


@pytest.fixture
def csv_tree(tmp_path):
    return shutil.copytree(sample_dir(), tmp_path / "mmlu")


def _as_records(data):
    return {split: {s: [(q.question, q.choices, q.answer) for q in qs] for s, qs in by.items()}
            for split, by in data.splits.items()}


def test_sample_layout_and_parsing():
    data = load_mmlu(sample_dir())
    assert data.layout == "csv"
    assert set(data.splits) == {"dev", "val", "test"}
    assert len(data.subjects()) == 5 and all(len(data.get("dev", s)) == 5 for s in data.subjects())
    q = data.get("test", "philosophy")[0]
    assert q.question.startswith('Who wrote "') and len(q.choices) == 4  # CSV quoting round-trips
    assert q.where.endswith("philosophy_test.csv: row 1")


def test_jsonl_and_hf_layouts_load_the_same_questions(tmp_path):
    import datasets

    ref = load_mmlu(sample_dir())
    jdir = tmp_path / "jsonl"
    jdir.mkdir()
    hf_splits = {}
    for split, name in (("dev", "dev"), ("val", "validation"), ("test", "test")):
        recs = [{"question": q.question, "subject": s, "choices": list(q.choices), "answer": "ABCD"[q.answer] if i % 2 else q.answer}
                for s in ref.subjects(split) for i, q in enumerate(ref.get(split, s))]
        (jdir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        hf_splits[name] = datasets.Dataset.from_list([{**r, "answer": "ABCD".index(r["answer"]) if isinstance(r["answer"], str) else r["answer"]} for r in recs])
    datasets.DatasetDict(hf_splits).save_to_disk(str(tmp_path / "hf"))
    for name, ds in hf_splits.items():
        (tmp_path / "pq" / "all").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(tmp_path / "pq" / "all" / f"{name}-00000-of-00001.parquet"))
    expected = _as_records(ref)
    for path in (jdir, tmp_path / "hf", tmp_path / "pq"):
        assert _as_records(load_mmlu(path)) == expected, path
    single = load_mmlu(jdir / "test.jsonl")  # a single file is the test split
    assert _as_records(single) == {"test": expected["test"]}


def _cli(run_cli, model, data, *extra):
    return run_cli("evaluate", "mmlu", "--model", str(model), "--data", str(data), "-q", *extra)


def _one_line(code, out, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmalign: error: ") and "Traceback" not in err
    return lines[0]


def test_malformed_csv_row(run_cli, tiny_llama_dir, csv_tree):
    f = csv_tree / "test" / "astronomy_test.csv"
    lines = f.read_text().splitlines()
    lines[2] = "Which planet?,Mars,Venus,Earth,C"  # 5 columns
    f.write_text("\n".join(lines) + "\n")
    msg = _one_line(*_cli(run_cli, tiny_llama_dir, csv_tree, "--shots", "0"))
    assert f"{f}: row 3: expected 6 columns" in msg


def test_answer_outside_a_to_d(run_cli, tiny_llama_dir, csv_tree):
    f = csv_tree / "dev" / "nutrition_dev.csv"
    lines = f.read_text().splitlines()
    lines[1] = lines[1][:-1] + "E"
    f.write_text("\n".join(lines) + "\n")
    msg = _one_line(*_cli(run_cli, tiny_llama_dir, csv_tree))
    assert f"{f}: row 2: answer must be A-D" in msg and "'E'" in msg


def test_missing_dev_split_with_shots(run_cli, tiny_llama_dir, csv_tree):
    (csv_tree / "dev" / "philosophy_dev.csv").unlink()
    msg = _one_line(*_cli(run_cli, tiny_llama_dir, csv_tree, "--shots", "5"))
    assert "philosophy_dev.csv: missing dev split for subject 'philosophy'" in msg
    (csv_tree / "dev" / "astronomy_dev.csv").write_text("Q?,a,b,c,d,A\n")
    msg = _one_line(*_cli(run_cli, tiny_llama_dir, csv_tree, "--shots", "2", "--subjects", "astronomy"))
    assert "astronomy_dev.csv: subject 'astronomy' has 1 dev examples, 2-shot needs 2" in msg


def test_unknown_subject(run_cli, tiny_llama_dir, csv_tree):
    msg = _one_line(*_cli(run_cli, tiny_llama_dir, csv_tree, "--subjects", "astronomy,astronmy"))
    assert f"{csv_tree}: unknown subject 'astronmy'" in msg and "did you mean 'astronomy'" in msg


def test_bad_jsonl_records(tmp_path):
    f = tmp_path / "test.jsonl"
    f.write_text('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 1, "subject": "x"}\n'
                 '{"question": "q", "choices": ["a", "b", "c"], "answer": 1, "subject": "x"}\n')
    with pytest.raises(DataError, match=r"test\.jsonl:2: 'choices' must be a list of 4 strings, got 3"):
        load_mmlu(f)
    f.write_text('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 4, "subject": "x"}\n')
    with pytest.raises(DataError, match=r"test\.jsonl:1: answer must be A-D or 0-3, got 4"):
        load_mmlu(f)
    with pytest.raises(DataError, match="data path not found"):
        load_mmlu(tmp_path / "nope")
