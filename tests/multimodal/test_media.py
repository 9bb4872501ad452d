"""Media items: kinds, reading, resampling, frames, and one-line errors naming the file."""

from __future__ import annotations

import pytest

from mmalign.errors import DataError
from mmalign.multimodal.media import load_audio, load_image, media_kind, split_by_kind, video_frames


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
