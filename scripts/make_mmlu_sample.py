"""Write a small synthetic MMLU-format dataset (the original CSV tree layout), deterministically.

    python scripts/make_mmlu_sample.py OUT_DIR [--test N] [--val N] [--seed S]

Creates ``OUT_DIR/{dev,val,test}/<subject>_{dev,val,test}.csv`` (no header; question, A, B, C, D,
answer) for five subjects named after MMLU subjects (so categories apply). The questions are
templated from small fact tables written for this script; nothing is copied from MMLU. The bundled
sample ``mmalign/data/bundled/mmlu_sample`` is this script's output with the defaults.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Callable
from pathlib import Path

LETTERS = "ABCD"

PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa",
    "Egypt": "Cairo", "Norway": "Oslo", "Chile": "Santiago", "Ghana": "Accra", "Spain": "Madrid",
    "Australia": "Canberra", "Vietnam": "Hanoi", "Poland": "Warsaw", "Cuba": "Havana",
}
WORKS = {
    "the Republic": "Plato", "the Nicomachean Ethics": "Aristotle", "Leviathan": "Thomas Hobbes",
    "the Critique of Pure Reason": "Immanuel Kant", "Meditations on First Philosophy": "René Descartes",
    "Utilitarianism": "John Stuart Mill", "Thus Spoke Zarathustra": "Friedrich Nietzsche",
    "the Ethics": "Baruch Spinoza", "An Essay Concerning Human Understanding": "John Locke",
}
DEFICIENCIES = {
    "scurvy": "vitamin C", "rickets": "vitamin D", "goitre": "iodine", "pellagra": "niacin",
    "beriberi": "thiamine", "night blindness": "vitamin A", "iron-deficiency anaemia": "iron",
}


def _mc(rng: random.Random, question: str, correct: str, pool: list[str]) -> list[str]:
    wrong = rng.sample([p for p in pool if p != correct], 3)
    choices = wrong + [correct]
    rng.shuffle(choices)
    return [question, *choices, LETTERS[choices.index(correct)]]


def maths(rng: random.Random) -> list[str]:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    op, value = rng.choice([("+", a + b), ("-", a - b), ("×", a * b)])
    pool = [str(value + d) for d in (-10, -2, -1, 1, 2, 3, 10, 11) if value + d != value]
    return _mc(rng, f"What is {a} {op} {b}?", str(value), pool + [str(value)])


def astronomy(rng: random.Random) -> list[str]:
    i = rng.randrange(len(PLANETS))
    ordinal = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"][i]
    if rng.random() < 0.5:
        return _mc(rng, f"Which planet is the {ordinal} planet from the Sun?", PLANETS[i], PLANETS)
    return _mc(rng, f"Counting outward from the Sun, {PLANETS[i]} is which planet?",
               f"the {ordinal}", [f"the {o}" for o in ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")])


def geography(rng: random.Random) -> list[str]:
    country = rng.choice(sorted(CAPITALS))
    return _mc(rng, f"What is the capital city of {country}?", CAPITALS[country], sorted(CAPITALS.values()))


def philosophy(rng: random.Random) -> list[str]:
    work = rng.choice(sorted(WORKS))
    return _mc(rng, f'Who wrote "{work}", a classic of philosophy?', WORKS[work], sorted(set(WORKS.values())))


def nutrition(rng: random.Random) -> list[str]:
    disease = rng.choice(sorted(DEFICIENCIES))
    return _mc(rng, f"A deficiency of which nutrient causes {disease}, in the classic description?",
               DEFICIENCIES[disease], sorted(set(DEFICIENCIES.values())))


SUBJECTS: dict[str, Callable[[random.Random], list[str]]] = {
    "elementary_mathematics": maths,
    "astronomy": astronomy,
    "high_school_geography": geography,
    "philosophy": philosophy,
    "nutrition": nutrition,
}


def write_sample(out: Path, *, dev: int = 5, val: int = 8, test: int = 12, seed: int = 0,
                 subjects: list[str] | None = None) -> Path:
    """Write the CSV tree to ``out``; returns ``out``."""
    for split, n in (("dev", dev), ("val", val), ("test", test)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for k, subject in enumerate(subjects or SUBJECTS):
            rng = random.Random(f"{seed}-{subject}-{split}-{k}")
            with (out / split / f"{subject}_{split}.csv").open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                for _ in range(n):
                    writer.writerow(SUBJECTS[subject](rng))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dev", type=int, default=5)
    parser.add_argument("--val", type=int, default=8)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_sample(args.out, dev=args.dev, val=args.val, test=args.test, seed=args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
