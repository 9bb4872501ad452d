import json

import pytest

from mmalign.config.schemas.data import DataConfig
from mmalign.data import load_preferences, load_prompts, load_sft
from mmalign.errors import DataError

HH_CHOSEN = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: An apple."
HH_REJECTED = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: No."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_prompts_with_field_mapping_and_meta(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"question": "What is 2+2?", "id": 7}, {"question": "Hi?", "id": 8}])
    recs = load_prompts(DataConfig(path=str(f), fields={"prompt": "question"}))
    assert [r.prompt for r in recs] == ["What is 2+2?", "Hi?"]
    assert recs[0].meta == {"id": 7}
    assert recs[1].source == f"{f}:2"


def test_jsonl_malformed_line_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "ok"}\n\n{"prompt": "broken"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON line") as info:
        load_prompts(str(f))
    assert "\n" not in str(info.value)


def test_jsonl_missing_field_empty_prompt_non_utf8_and_no_rows(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    with pytest.raises(DataError, match=r"m\.jsonl:2: missing field 'response'"):
        load_sft(str(f))
    f = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a"}, {"prompt": "  "}])
    with pytest.raises(DataError, match=r"e\.jsonl:2: empty prompt"):
        load_prompts(str(f))
    f = tmp_path / "latin1.jsonl"
    f.write_bytes('{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8"):
        load_prompts(str(f))
    f = tmp_path / "blank.jsonl"
    f.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no usable rows"):
        load_prompts(str(f))
    with pytest.raises(DataError, match=r"nope\.jsonl: data file not found"):
        load_prompts(str(tmp_path / "nope.jsonl"))


def test_hh_preferences_are_split_into_prompt_chosen_rejected(tmp_path):
    f = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
    (rec,) = load_preferences(str(f))
    assert rec.prompt.endswith("Name a fruit.\n\nAssistant:") and rec.prompt.startswith("\n\nHuman: Hi")
    assert (rec.chosen, rec.rejected) == (" An apple.", " No.")
    (p,) = load_prompts(str(f))
    assert p.prompt == rec.prompt
    (s,) = load_sft(DataConfig(path=str(f), fields={"response": "chosen"}))
    assert (s.prompt, s.response) == (rec.prompt, " An apple.")
    bad = write_jsonl(tmp_path / "hh_bad.jsonl", [{"chosen": HH_CHOSEN, "rejected": "\n\nHuman: Other\n\nAssistant: x"}])
    with pytest.raises(DataError, match=r"hh_bad\.jsonl:1: the chosen and rejected dialogues have different prompts"):
        load_preferences(str(bad))


def test_csv_loads_and_ragged_row_names_line(tmp_path):
    f = tmp_path / "prefs.csv"
    f.write_text('prompt,chosen,rejected\nq1,"good, very",bad\n"multi\nline q",yes,no\n', encoding="utf-8")
    recs = load_preferences(str(f))
    assert [(r.prompt, r.chosen) for r in recs] == [("q1", "good, very"), ("multi\nline q", "yes")]
    bad = tmp_path / "ragged.csv"
    bad.write_text("prompt,chosen,rejected\nq1,a,b\nq2,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ragged\.csv:3: expected 3 fields, got 2"):
        load_preferences(str(bad))


def test_parquet_loads_and_bad_rows_or_files_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "sft.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "response": ["x", None, "z"]}), f)
    with pytest.raises(DataError, match=r"sft\.parquet row 1: missing field 'response'"):
        load_sft(str(f))
    assert [r.response for r in load_sft(DataConfig(path=str(f), max_rows=1))] == ["x"]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        load_sft(str(broken))


def test_hf_save_to_disk_dir_and_data_file_dir(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"q": ["one", "two"], "a": ["1", "2"]}),
        "test": datasets.Dataset.from_dict({"q": ["three", ""], "a": ["3", "4"]}),
    })
    dd.save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(path=str(tmp_path / "saved"), fields={"prompt": "q", "response": "a"})
    assert [(r.prompt, r.response) for r in load_sft(cfg)] == [("one", "1"), ("two", "2")]
    cfg.split = "test"
    with pytest.raises(DataError, match=r"saved row 1: empty prompt"):
        load_sft(cfg)
    cfg.split = "validation"
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: train, test\)"):
        load_sft(cfg)
    # a folder of data files goes through datasets.load_dataset
    folder = tmp_path / "files"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"prompt": "p1"}, {"prompt": "p2"}])
    assert [r.prompt for r in load_prompts(str(folder))] == ["p1", "p2"]
    (tmp_path / "saved" / "train" / "state.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(DataError, match=r"saved: could not load the saved dataset"):
        load_prompts(DataConfig(path=str(tmp_path / "saved")))


def test_hub_name_offline_is_a_one_line_error():
    with pytest.raises(DataError, match=r"no-such-org/no-such-dataset: could not load dataset") as info:
        load_prompts("no-such-org/no-such-dataset")
    assert "\n" not in str(info.value)


def test_media_paths_resolve_relative_to_the_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"fake")
    f = write_jsonl(tmp_path / "mm.jsonl", [{"prompt": "describe", "images": ["img/a.png"], "audio": []}])
    (rec,) = load_prompts(str(f))
    assert rec.images == [str(tmp_path / "img" / "a.png")] and rec.media == rec.images
    f = write_jsonl(tmp_path / "mm_bad.jsonl", [{"prompt": "describe", "images": "img/missing.png"}])
    with pytest.raises(DataError, match=r"mm_bad\.jsonl:1: images file not found: img/missing\.png"):
        load_prompts(str(f))


def test_video_may_be_a_directory_of_frames_but_images_may_not(tmp_path):
    (tmp_path / "clips" / "walk").mkdir(parents=True)
    (tmp_path / "clips" / "walk" / "f0.png").write_bytes(b"fake")
    (tmp_path / "clips" / "run.mp4").write_bytes(b"fake")
    f = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "<video> <video> what happens?", "video": ["clips/walk", "clips/run.mp4"]}])
    (rec,) = load_sft(DataConfig(path=str(f), fields={"response": "prompt"}))
    assert rec.video == [str(tmp_path / "clips" / "walk"), str(tmp_path / "clips" / "run.mp4")]
    assert rec.media == rec.video
    f = write_jsonl(tmp_path / "v_bad.jsonl", [{"prompt": "p", "video": ["clips/missing"]}])
    with pytest.raises(DataError, match=r"v_bad\.jsonl:1: video file or frame directory not found: clips/missing"):
        load_prompts(str(f))
    f = write_jsonl(tmp_path / "img_dir.jsonl", [{"prompt": "p"}, {"prompt": "p", "images": ["clips/walk"]}])
    with pytest.raises(DataError, match=r"img_dir\.jsonl:2: images file not found: clips/walk"):
        load_prompts(str(f))


def test_json_file_of_records(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"data": [{"prompt": "a"}, {"prompt": "b"}]}), encoding="utf-8")
    assert [r.prompt for r in load_prompts(str(f))] == ["a", "b"]
    f.write_text('[{"prompt": "a"},\n {"prompt": }]', encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.json:2: malformed JSON"):
        load_prompts(str(f))


def test_unknown_bundled_set():
    with pytest.raises(DataError, match="unknown bundled dataset 'bundled:text/nope'"):
        load_prompts("bundled:text/nope")


def test_skip_rows_gives_a_disjoint_held_out_slice():
    first = load_prompts(DataConfig(path="bundled:text/prompts_train", max_rows=64))
    rest = load_prompts(DataConfig(path="bundled:text/prompts_train", skip_rows=64, max_rows=256))
    everything = load_prompts(DataConfig(path="bundled:text/prompts_train", max_rows=320))
    assert [r.prompt for r in first + rest] == [r.prompt for r in everything]
    assert len(rest) == 256 and rest[0].source != first[-1].source
    with pytest.raises(DataError, match="skip_rows"):
        load_prompts(DataConfig(path="bundled:text/prompts_train", skip_rows=10_000))
