#!/usr/bin/env python
"""Generate the bundled multimodal tasks, deterministically (same bytes on every run).

* ``shapes``: 32×32 PNG images of one coloured shape (red/green/blue/yellow ×
  circle/square/triangle, jittered size and position) with the questions "What colour is the
  shape?" and "What shape is it?".
* ``tones``: 0.5 s, 16 kHz mono WAV clips of 1-3 beeps of a low (300 Hz) or high (1500 Hz)
  tone with the questions "Is the tone high or low?" and "How many beeps?".

Each task gets ``train.jsonl``, ``eval.jsonl`` (records with ``prompt``, ``images``/``audio``,
``response``, ``answer``, ``question``) and ``answers.jsonl`` (prompt → answer for the ``rules``
reward's ``exact_match``). Prompts are unique (they carry the item number), so a prompt's text
identifies its gold answer.

Usage: python scripts/make_multimodal_tasks.py [--out mmalign/data/bundled]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (40, 60, 220), "yellow": (235, 210, 30)}
SHAPES = ("circle", "square", "triangle")
PITCHES = {"low": 300.0, "high": 1500.0}
BEEPS = {1: "one", 2: "two", 3: "three"}
RATE = 16_000
SIZE = 32


def draw_shape(colour: str, shape: str, rng: random.Random):
    from PIL import Image, ImageDraw

    grey = rng.randint(225, 255)
    image = Image.new("RGB", (SIZE, SIZE), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    r = rng.randint(8, 12)
    cx, cy = rng.randint(r + 1, SIZE - r - 2), rng.randint(r + 1, SIZE - r - 2)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = int(r * 0.85)
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def beeps(pitch: float, count: int, rng: random.Random) -> np.ndarray:
    wave = np.zeros(RATE // 2, dtype=np.float32)
    t = np.arange(int(0.1 * RATE)) / RATE
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
    freq = pitch * rng.uniform(0.95, 1.05)
    start = int(rng.uniform(0.0, 0.03) * RATE)
    for _ in range(count):
        wave[start:start + len(t)] += (0.5 * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        start += int(0.15 * RATE)
    return wave


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def make_shapes(out: Path, variants: dict[str, int]) -> None:
    rng = random.Random(1234)
    (out / "images").mkdir(parents=True, exist_ok=True)
    answers, number = [], 0
    for split, n in variants.items():
        rows = []
        for v in range(n):
            for colour in COLOURS:
                for shape in SHAPES:
                    number += 1
                    name = f"images/{split}_{colour}_{shape}_{v}.png"
                    draw_shape(colour, shape, rng).save(out / name, optimize=True)
                    for question, answer in (("What colour is the shape?", colour), ("What shape is it?", shape)):
                        kind = "colour" if answer == colour else "shape"
                        prompt = f"<image>\nImage {number}. {question}"
                        rows.append({"id": f"{split}-{number}-{kind}", "prompt": prompt, "images": [name],
                                     "response": answer, "answer": answer, "question": kind})
        _write_jsonl(out / f"{split}.jsonl", rows)
        answers += [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]
    _write_jsonl(out / "answers.jsonl", answers)


def make_tones(out: Path, variants: dict[str, int]) -> None:
    import soundfile as sf

    rng = random.Random(4321)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    answers, number = [], 0
    for split, n in variants.items():
        rows = []
        for v in range(n):
            for pitch, freq in PITCHES.items():
                for count, word in BEEPS.items():
                    number += 1
                    name = f"audio/{split}_{pitch}_{count}_{v}.wav"
                    sf.write(str(out / name), beeps(freq, count, rng), RATE, subtype="PCM_16")
                    for question, answer, kind in (("Is the tone high or low?", pitch, "pitch"),
                                                   ("How many beeps?", word, "beeps")):
                        prompt = f"<audio>\nClip {number}. {question}"
                        rows.append({"id": f"{split}-{number}-{kind}", "prompt": prompt, "audio": [name],
                                     "response": answer, "answer": answer, "question": kind})
        _write_jsonl(out / f"{split}.jsonl", rows)
        answers += [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]
    _write_jsonl(out / "answers.jsonl", answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "mmalign" / "data" / "bundled"))
    args = parser.parse_args()
    out = Path(args.out)
    make_shapes(out / "shapes", {"train": 6, "eval": 2})
    make_tones(out / "tones", {"train": 4, "eval": 2})
    print(f"wrote {out / 'shapes'} and {out / 'tones'}")


if __name__ == "__main__":
    main()
