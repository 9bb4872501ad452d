"""Generate the bundled text task: ``mmalign/data/bundled/text/*.jsonl``.

Deterministic (fixed seed, no network): running it again rewrites byte-identical files.

    python scripts/make_bundled_task.py [--out mmalign/data/bundled/text] [--seed 0]

Six categories of short dialogue prompts with checkable answers (see docs/bundled_tasks.md).
Gold scores come from :mod:`mmalign.rewards.bundled`, the task's gold reward.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

from mmalign.rewards.bundled import (
    COLOURS,
    NAMES,
    RHYMES,
    WORDS,
    gold_reward,
    parse_prompt,
    quality,
)

CATEGORIES = ("count", "colours", "rhyme", "add", "capitals", "greet")
NUMBER_NAMES = {2: "two", 3: "three", 4: "four"}
OPENERS = (
    ("Hi there!", "Hello! How can I help you today?"),
    ("I have a small task for you.", "Sure, what is it?"),
    ("Good morning.", "Good morning! What can I do for you?"),
    ("Can you help me?", "Of course. What do you need?"),
    ("Let us play a word game.", "Sounds fun! Go ahead."),
)
PHRASINGS: dict[str, tuple[str, ...]] = {
    "count": ("Count from {a} to {b}.", "Please count from {a} to {b}.", "Count up from {a} to {b}."),
    "colours": ("Name {k} colours.", "List {k} colors.", "Please name {k} colours.", "Tell me {k} colours."),
    "rhyme": ("Give me a word that rhymes with {w}.", "What rhymes with {w}?", "Tell me a word that rhymes with {w}."),
    "add": ("What is {a} plus {b}?", "Add {a} and {b}.", "Please add {a} and {b}."),
    "capitals": ("Write the word {w} in capital letters.", "Please write {w} in capital letters."),
    "greet": ("Say hello to {n} politely.", "Greet {n} politely.", "Please greet {n} politely."),
}
GREETING_REPLIES = ("Hello {n}, nice to meet you!", "Hi {n}, it is good to see you.",
                    "Good morning {n}, how lovely to meet you!", "Hello {n}, welcome!")
JUNK = ("\n\nHuman: Thanks!", "\nI hope that helps, have a nice day and see you soon.")

# Per split: (prompts, sft demos per prompt, preference pairs per prompt)
SPLITS = {"train": (120, 3, 6), "eval": (30, 2, 4)}
SFT_NOISE = 0.2  # share of imperfect SFT demonstrations, so the SFT policy stays imperfect
CHOSEN_IMPERFECT = 0.25  # share of preference pairs whose chosen response is itself imperfect


def task_text(rng: random.Random, category: str) -> str:
    template = rng.choice(PHRASINGS[category])
    if category == "count":
        a = rng.randint(1, 6)
        return template.format(a=a, b=a + rng.randint(2, 5))
    if category == "colours":
        return template.format(k=NUMBER_NAMES[rng.randint(2, 4)])
    if category == "rhyme":
        return template.format(w=rng.choice(sorted(RHYMES)))
    if category == "add":
        return template.format(a=rng.randint(0, 9), b=rng.randint(0, 9))
    if category == "capitals":
        return template.format(w=rng.choice(WORDS))
    return template.format(n=rng.choice(NAMES))


def make_prompt(rng: random.Random, category: str) -> str:
    turn = task_text(rng, category)
    if rng.random() < 0.3:
        human, assistant = rng.choice(OPENERS)
        return f"Human: {human}\n\nAssistant: {assistant}\n\nHuman: {turn}\n\nAssistant:"
    return f"Human: {turn}\n\nAssistant:"


def gold_response(rng: random.Random, category: str, params: tuple) -> str:
    if category == "count":
        return " " + " ".join(str(i) for i in range(params[0], params[1] + 1))
    if category == "colours":
        return " " + ", ".join(rng.sample(COLOURS, params[0]))
    if category == "rhyme":
        return " " + rng.choice(RHYMES[params[0]])
    if category == "add":
        return f" {params[0] + params[1]}"
    if category == "capitals":
        return " " + params[0].upper()
    return " " + rng.choice(GREETING_REPLIES).format(n=params[0])


def corruptions(rng: random.Random, category: str, params: tuple, gold: str) -> list[str]:
    """Plausible wrong or sloppy answers (their gold quality is computed, not assumed)."""
    out = [" I don't know.", gold + rng.choice(JUNK)]
    if category == "count":
        a, b = params
        nums = list(range(a, b + 1))
        skip = nums[:]
        del skip[rng.randrange(1, len(skip))]
        out += [" ".join(["", *map(str, skip)]), " ".join(["", *map(str, nums[:-1])]),
                " ".join(["", *map(str, nums + [b + 1])]), " ".join(["", *map(str, reversed(nums))]),
                " ".join(["", *map(str, range(a + 1, b + 2))]), " The numbers are " + " ".join(map(str, nums)),
                " " + " ".join(str(a) for _ in nums)]
    elif category == "colours":
        (k,) = params
        picks = rng.sample(COLOURS, k + 1)
        out += [" " + ", ".join(picks[:k - 1]), " " + ", ".join(picks),
                " " + ", ".join(picks[:k - 1] + [rng.choice(WORDS)]),
                " " + ", ".join([picks[0]] * k), " I like colours."]
    elif category == "rhyme":
        (word,) = params
        others = [w for fam, ws in RHYMES.items() if fam != word for w in ws]
        out += [" " + rng.choice(others), f" {word}", f" The word {rng.choice(RHYMES[word])} rhymes with {word}.",
                " " + rng.choice(WORDS)]
    elif category == "add":
        a, b = params
        s = a + b
        out += [f" {s + rng.choice((-1, 1))}", f" {s + rng.choice((-4, -3, -2, 2, 3, 4))}",
                f" The answer is {s}.", f" {a * b + (1 if a * b == s else 0)}", f" {a}{b}"]
    elif category == "capitals":
        (w,) = params
        out += [f" {w.lower()}", f" {w.capitalize()}", f" {rng.choice([x for x in WORDS if x != w]).upper()}",
                f" {w.upper()} is the word."]
    else:
        (n,) = params
        other = rng.choice([x for x in NAMES if x != n])
        out += [" Hello, nice to meet you!", f" {n}, nice to meet you!", f" Go away, {n}.", f" Hello {n}",
                f" Hello {other}, nice to meet you!",
                f" Hello {n}, it is really very nice to meet you today and I hope you are well!"]
    return out


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=True) + "\n")


def build_split(rng: random.Random, split: str, seen: set[str]) -> dict[str, list[dict]]:
    n_prompts, n_sft, n_pairs = SPLITS[split]
    prompts: list[dict] = []
    for category in CATEGORIES:
        for made in range(n_prompts):
            for _ in range(50):  # prefer unseen prompts; small categories repeat once exhausted
                p = make_prompt(rng, category)
                if p not in seen:
                    break
            seen.add(p)
            prompts.append({"id": f"{split}-{category}-{made:03d}", "category": category, "prompt": p})
    rng.shuffle(prompts)
    sft: list[dict] = []
    prefs: list[dict] = []
    for row in prompts:
        p, cat = row["prompt"], row["category"]
        category, params = parse_prompt(p)  # type: ignore[misc]
        assert category == cat, (p, category, cat)
        for _ in range(n_sft):
            response = gold_response(rng, cat, params)
            if rng.random() < SFT_NOISE:
                response = rng.choice([c for c in corruptions(rng, cat, params, response)
                                       if 0.2 <= quality(cat, params, c) < 1.0] or [response])
            sft.append({"id": row["id"], "category": cat, "prompt": p, "response": response})
        for _ in range(n_pairs):
            gold = gold_response(rng, cat, params)
            bad = corruptions(rng, cat, params, gold)
            chosen = gold
            if rng.random() < CHOSEN_IMPERFECT:
                mid = [c for c in bad if 0.3 <= quality(cat, params, c) < 1.0]
                chosen = rng.choice(mid) if mid else gold
            q_chosen = quality(cat, params, chosen)
            worse = [c for c in bad if quality(cat, params, c) <= q_chosen - 0.15]
            rejected = rng.choice(worse)
            prefs.append({"id": row["id"], "category": cat, "prompt": p, "chosen": chosen, "rejected": rejected,
                          "chosen_reward": round(gold_reward(p, chosen), 4),
                          "rejected_reward": round(gold_reward(p, rejected), 4)})
    return {"prompts": prompts, "sft": sft, "prefs": prefs}


def main(argv: list[str] | None = None, _log: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "mmalign/data/bundled/text"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    seen: set[str] = set()
    out = Path(args.out)
    for split in ("train", "eval"):
        data = build_split(rng, split, seen)
        for kind, rows in data.items():
            _write(out / f"{kind}_{split}.jsonl", rows)
            _log(f"{out / f'{kind}_{split}.jsonl'}: {len(rows)} rows")


if __name__ == "__main__":
    main()
