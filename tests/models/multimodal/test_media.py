"""Media items: kinds, reading, resampling, frames, and one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.errors import DataError
from mmalign.models.media import load_audio, load_image, media_kind, split_by_kind, video_frames


def test_kinds_by_extension_and_object(media_dir):
    from PIL import Image

    assert media_kind(str(media_dir / "red.png")) == "image"
    assert media_kind(media_dir / "tone.flac") == "audio"
    assert media_kind(str(media_dir / "clip")) == "video"
    assert media_kind(Image.new("RGB", (2, 2))) == "image"
    groups = split_by_kind([str(media_dir / "tone.wav"), str(media_dir / "red.png"), str(media_dir / "blue.jpg")])
    assert groups["image"] == [str(media_dir / "red.png"), str(media_dir / "blue.jpg")]
    assert len(groups["audio"]) == 1 and groups["video"] == []


def test_audio_is_resampled_to_16khz_mono(media_dir):
    assert load_audio(media_dir / "tone.wav").shape == (8000,)
    assert load_audio(media_dir / "slow.wav").shape == (8000,)  # 4000 samples at 8 kHz -> 8000 at 16 kHz
    assert load_audio(media_dir / "tone.flac").shape == (8000,)


def test_video_frames_are_sampled_evenly(media_dir):
    frames = video_frames(str(media_dir / "clip"), 3)
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 100, 200]


@pytest.mark.parametrize("name, message", [
    ("missing.png", "media file not found"),
    ("broken.png", "cannot read image"),
    ("broken.wav", "cannot read audio"),
])
def test_bad_files_are_one_line_errors_naming_record_and_file(media_dir, name, message):
    path = media_dir / name
    load = load_audio if name.endswith(".wav") else load_image
    with pytest.raises(DataError) as err:
        load(str(path), "data.jsonl:7")
    text = str(err.value)
    assert "\n" not in text and text.startswith("data.jsonl:7: ") and message in text and name in text


def _bomb_png(path: Path, width: int = 20_000, height: int = 10_000) -> Path:
    """A tiny PNG whose header claims width x height pixels (past PIL's decompression-bomb limit)."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_image_is_a_one_line_error(tmp_path):
    bomb = _bomb_png(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=f"row 3: cannot read image {bomb} \\(Image size \\(200000000 pixels\\)"):
        load_image(bomb, "row 3")


def test_a_decompression_bomb_in_a_multimodal_dataset_stops_decode_with_one_line(tmp_path, run_cli, mm_policy_dir):
    _bomb_png(tmp_path / "bomb.png")
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "<image>\\nWhat colour is the shape?", "images": ["bomb.png"]}\n', encoding="utf-8")
    cfg = tmp_path / "decode.yaml"
    cfg.write_text(f"""recipe: decode
run: {{name: d, output_dir: {tmp_path / 'runs'}, device: cpu, dtype: float32}}
model: {{path: {mm_policy_dir}}}
data: {{path: {data}}}
decode: {{method: sample, n: 2, max_new_tokens: 2}}
""")
    code, _, err = run_cli("-q", "decode", str(cfg))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"cannot read image {tmp_path / 'bomb.png'}" in lines[0] and "decompression bomb" in lines[0], err
