"""Media items: what a ``Prompt.media`` entry may be, which modality it is, and how it is read.

An item is a path (str or ``os.PathLike``) or an in-memory object:

* image: ``.png .jpg .jpeg .bmp .gif .webp`` files, or a ``PIL.Image``;
* audio: ``.wav .flac .ogg`` files (read with soundfile), or a ``(waveform, sample_rate)`` tuple;
* video: a directory of frame images (sorted by name), or a list of frame items.

Every failure is a :class:`~mmalign.errors.DataError` whose single line names ``where`` (the record
or prompt) and the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmalign.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
KINDS = ("image", "audio", "video")
PLACEHOLDERS = {"image": "<image>", "audio": "<audio>", "video": "<video>"}
SAMPLE_RATE = 16_000


def media_kind(item: Any, where: str = "media") -> str:
    """``image``, ``audio`` or ``video`` for a media item (see the module docstring)."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return "image"
        if suffix in AUDIO_EXTENSIONS:
            return "audio"
        if suffix in VIDEO_EXTENSIONS or path.is_dir():
            return "video"
        if not path.exists():
            raise DataError(f"{where}: media file not found: {path}")
        raise DataError(f"{where}: unknown media type of {path} (images: {', '.join(IMAGE_EXTENSIONS)}; "
                        f"audio: {', '.join(AUDIO_EXTENSIONS)}; video: a directory of frames)")
    if isinstance(item, (list, tuple)) and item and not _is_waveform_pair(item):
        return "video"
    if _is_waveform_pair(item):
        return "audio"
    try:
        from PIL import Image

        if isinstance(item, Image.Image):
            return "image"
    except ImportError:  # pragma: no cover - pillow is a dependency
        pass
    raise DataError(f"{where}: cannot use a {type(item).__name__} as a media item")


def _is_waveform_pair(item: Any) -> bool:
    return (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int)
            and isinstance(item[0], (np.ndarray, torch.Tensor)))


def split_by_kind(media: Sequence[Any], where: str = "media") -> dict[str, list[Any]]:
    """Group items by modality, keeping their order within each modality."""
    out: dict[str, list[Any]] = {k: [] for k in KINDS}
    for item in media:
        out[media_kind(item, where)].append(item)
    return out


def check_file(path: str | os.PathLike, where: str) -> Path:
    """The path, or a DataError naming ``where`` if it is missing."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{where}: media file not found: {p}")
    return p


def load_image(item: Any, where: str = "media"):
    """An RGB ``PIL.Image`` from a path or an image object."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    path = check_file(item, where)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{where}: cannot read image {path} ({reason})") from None


def load_audio(item: Any, where: str = "media", sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A mono float32 waveform [samples] at ``sample_rate`` (resampled with torchaudio)."""
    import torchaudio.functional as AF

    if _is_waveform_pair(item):
        wave, rate = torch.as_tensor(item[0], dtype=torch.float32), int(item[1])
        label = "waveform"
    else:
        import soundfile as sf

        path = check_file(item, where)
        label = str(path)
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{where}: cannot read audio {path} ({reason})") from None
        wave = torch.from_numpy(np.ascontiguousarray(data.T))  # [channels, samples]
    if wave.dim() == 2:
        wave = wave.mean(0)
    if wave.dim() != 1 or wave.numel() == 0:
        raise DataError(f"{where}: audio {label} is empty or not a 1-D/2-D waveform")
    if rate != sample_rate:
        wave = AF.resample(wave, rate, sample_rate)
    if not bool(torch.isfinite(wave).all()):
        raise DataError(f"{where}: audio {label} contains NaN or inf samples")
    return wave.float()


def video_frames(item: Any, num_frames: int, where: str = "media") -> list[Any]:
    """``num_frames`` equally spaced frames (PIL images) of a video item (all if it has fewer)."""
    if isinstance(item, (list, tuple)):
        frames = list(item)
    else:
        path = check_file(item, where)
        if not path.is_dir():
            raise DataError(f"{where}: cannot decode video file {path}; give a directory of frame images")
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not frames:
            raise DataError(f"{where}: video directory {path} holds no frame images")
    if len(frames) > num_frames:
        idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
        frames = [frames[i] for i in idx]
    return [load_image(f, where) for f in frames]


def describe(prompt: Any, index: int) -> str:
    """How errors name a prompt: its record source if it has one, else its index and text."""
    source = getattr(prompt, "source", "")
    if source:
        return str(source)
    text = getattr(prompt, "text", str(prompt))
    short = " ".join(text.split())[:40]
    return f"prompt {index} ({short!r})"
