"""The gold reward of the bundled text task (``reward: {kind: bundled_text}``).

Each bundled prompt asks for one short, checkable thing (count, name colours, rhyme, add, write
in capitals, greet someone). The reward first grades the response with a quality ``q`` in
[0, 1], then maps it to the prompt category's own range::

    r(x, y) = offset[c(x)] + scale[c(x)] * q(x, y)

The offsets and scales differ by orders of magnitude between categories on purpose: raw rewards
then mostly measure *which prompt* was asked, while calibrated rewards (quantiles under the
reference policy) measure how good the response is for that prompt. See docs/bundled_tasks.md.

``reward: {kind: bundled_smooth}`` is the same task with a *continuous* reward: the quality plus a
fixed, smooth per-character style score ``s(y)`` in [0, 1] (:func:`style_score`)::

    r(x, y) = offset[c(x)] + scale[c(x)] * (q(x, y) + STYLE_WEIGHT * s(y)) / (1 + STYLE_WEIGHT)

``q`` takes a few values per prompt, so under the gold reward many reference samples tie; ties
make calibrated rewards lumpy (not Uniform[0, 1]) and cap best-of-N gains. ``s`` breaks those ties
(two different responses almost never share it) and gives the RL a signal on every token, while
the task quality still dominates (``s`` varies by a few hundredths between typical responses).

``reward: {kind: bundled_style}`` keeps only the style score, on the same per-category scales::

    r(x, y) = offset[c(x)] + scale[c(x)] * s(y)

It is the reward the reproduction and the demo train on: continuous, and something a toy policy
can learn on every prompt, so the RL can be held to the exact optimum (docs/bundled_tasks.md).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

import torch

from mmalign.errors import DataError, RewardError
from mmalign.rewards.base import check_batch, stable_hash, to_scores

# category -> (offset, scale): reward range is [offset, offset + scale]
CATEGORY_RANGES: dict[str, tuple[float, float]] = {
    "count": (0.0, 1.0),
    "colours": (50.0, 50.0),
    "rhyme": (-20.0, 4.0),
    "add": (5.0, 2.0),
    "capitals": (0.0, 20.0),
    "greet": (-50.0, 100.0),
}

COLOURS = ("red", "blue", "green", "yellow", "pink", "black", "white", "orange")
RHYMES: dict[str, tuple[str, ...]] = {
    "cat": ("hat", "bat", "mat", "rat", "sat"),
    "dog": ("log", "fog", "frog", "hog"),
    "sun": ("fun", "run", "bun", "spun"),
    "cake": ("lake", "make", "bake", "take"),
    "ring": ("sing", "king", "wing", "thing"),
    "bell": ("well", "tell", "shell", "sell"),
    "moon": ("spoon", "soon", "noon", "tune"),
    "tree": ("bee", "sea", "free", "see"),
}
WORDS = ("dog", "cat", "tree", "house", "river", "apple", "bird", "stone", "cloud", "lamp", "book", "fish")
NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Finn", "Grace", "Hugo", "Ivy", "Jack", "Lena", "Max")
GREETINGS = ("hello", "hi", "good morning", "good day", "greetings")

# One pattern per category, matched on the last human turn (several phrasings each).
PATTERNS: dict[str, re.Pattern] = {
    "count": re.compile(r"^(?:Please )?[Cc]ount (?:from|up from) (\d+) to (\d+)\b"),
    "colours": re.compile(r"^(?:Please )?(?:[Nn]ame|[Ll]ist|[Tt]ell me) (\w+) colou?rs\b"),
    "rhyme": re.compile(r"\brhymes? with ['\"]?(\w+)['\"]?"),
    "add": re.compile(r"^What is (\d+) plus (\d+)\?|^(?:Please )?[Aa]dd (\d+) and (\d+)\b"),
    "capitals": re.compile(r"^(?:Please )?[Ww]rite (?:the word )?['\"]?(\w+)['\"]? in capital letters"),
    "greet": re.compile(r"^(?:Please )?(?:[Ss]ay hello to|[Gg]reet) (\w+) politely"),
}
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "2": 2, "3": 3, "4": 4}


def last_human_turn(prompt: str) -> str:
    """The text of the last ``Human:`` turn of an HH-style prompt."""
    turns = prompt.split("\n\nHuman:")
    last = turns[-1]
    if len(turns) == 1:
        last = last.split("Human:", 1)[-1]
    return last.split("\n\nAssistant:", 1)[0].strip()


def parse_prompt(prompt: str) -> tuple[str, tuple] | None:
    """``(category, parameters)`` of a bundled prompt, or None if it is not one."""
    text = last_human_turn(prompt)
    for category, pattern in PATTERNS.items():
        m = pattern.search(text)
        if m is None:
            continue
        groups = tuple(g for g in m.groups() if g is not None)
        if category in ("count", "add"):
            return category, tuple(int(g) for g in groups)
        if category == "colours":
            k = NUMBER_WORDS.get(groups[0].lower())
            return (category, (k,)) if k else None
        if category == "rhyme":
            word = groups[0].lower()
            return (category, (word,)) if word in RHYMES else None
        return category, (groups[0],)
    return None


def _main_text(response: str) -> tuple[str, bool]:
    """The first non-empty line of the response, and whether anything follows it."""
    text = response.strip()
    first, _, rest = text.partition("\n")
    return first.strip(), bool(rest.strip())


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+|\d+", text)


def quality(category: str, params: tuple, response: str) -> float:
    """How well ``response`` does the task, in [0, 1]."""
    text, trailing = _main_text(response)
    q = _QUALITY[category](params, text)
    if trailing:
        q *= 0.5
    return float(min(1.0, max(0.0, q)))


def _q_count(params: tuple, text: str) -> float:
    a, b = params
    expected = [str(i) for i in range(a, b + 1)]
    got = re.findall(r"\d+", text)
    if not got:
        return 0.0
    right = sum(1 for e, g in zip(expected, got) if e == g)
    q = right / max(len(expected), len(got))
    if len(_words(text)) > len(got):  # words mixed in with the numbers
        q -= 0.2
    return q


def _q_colours(params: tuple, text: str) -> float:
    (k,) = params
    items = [w.lower() for w in _words(text)]
    if not items:
        return 0.0
    valid = []
    for w in items:
        if w in COLOURS and w not in valid:
            valid.append(w)
    invalid = len(items) - len(valid)
    return min(len(valid), k) / k - 0.25 * invalid - 0.25 * max(0, len(valid) - k)


def _q_rhyme(params: tuple, text: str) -> float:
    (word,) = params
    items = [w.lower() for w in _words(text)]
    if not items:
        return 0.0
    family = RHYMES[word]
    if len(items) == 1:
        if items[0] in family:
            return 1.0
        return 0.2 if items[0] == word else 0.0
    return 0.5 if any(w in family for w in items) else 0.0


def _q_add(params: tuple, text: str) -> float:
    a, b = params
    numbers = re.findall(r"-?\d+", text)
    if not numbers:
        return 0.0
    diff = abs(int(numbers[0]) - (a + b))
    q = 1.0 if diff == 0 else 0.3 if diff == 1 else 0.0
    if len(_words(text)) > 1:
        q -= 0.2
    return q


def _q_capitals(params: tuple, text: str) -> float:
    (word,) = params
    items = _words(text)
    if not items:
        return 0.0
    if items[0] == word.upper():
        return 1.0 if len(items) == 1 else 0.6
    if items[0].lower() == word.lower():
        return 0.4 if any(c.isupper() for c in items[0]) else 0.2
    return 0.0


def _q_greet(params: tuple, text: str) -> float:
    (name,) = params
    low = text.lower()
    q = 0.0
    if any(low.startswith(g) for g in GREETINGS):
        q += 0.4
    if re.search(r"\b" + re.escape(name) + r"\b", text):
        q += 0.4
    if text.endswith(("!", ".")):
        q += 0.2
    if len(text.split()) > 10:
        q -= 0.3
    if re.search(r"\b(go away|stupid|leave|shut up)\b", low):
        q = 0.0
    return q


_QUALITY = {
    "count": _q_count,
    "colours": _q_colours,
    "rhyme": _q_rhyme,
    "add": _q_add,
    "capitals": _q_capitals,
    "greet": _q_greet,
}


def _parsed(prompt: str, kind: str) -> tuple[str, tuple]:
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise DataError(f"{kind} reward: not a bundled-task prompt: {last_human_turn(prompt)[:60]!r}")
    return parsed


def gold_reward(prompt: str, response: str) -> float:
    """``offset + scale * quality`` for a bundled prompt; DataError for any other prompt."""
    category, params = _parsed(prompt, "bundled_text")
    offset, scale = CATEGORY_RANGES[category]
    return offset + scale * quality(category, params, response)


STYLE_WEIGHT = 0.5


@functools.lru_cache(maxsize=4096)
def _char_weight(ch: str) -> float:
    """A fixed pseudo-random weight in [0, 1) for one character (the same on every machine)."""
    return int.from_bytes(hashlib.sha256(ch.encode("utf-8")).digest()[:4], "little") / 2**32


def style_score(response: str) -> float:
    """Mean character weight of the stripped response, in [0, 1] (0 for an empty response)."""
    text = response.strip()
    return sum(_char_weight(ch) for ch in text) / len(text) if text else 0.0


def smooth_reward(prompt: str, response: str) -> float:
    """The continuous reward of ``bundled_smooth``: quality plus a weighted style score."""
    category, params = _parsed(prompt, "bundled_smooth")
    offset, scale = CATEGORY_RANGES[category]
    q = quality(category, params, response)
    return offset + scale * (q + STYLE_WEIGHT * style_score(response)) / (1.0 + STYLE_WEIGHT)


def style_reward(prompt: str, response: str) -> float:
    """The continuous reward of ``bundled_style``: the style score on the category's scale."""
    offset, scale = CATEGORY_RANGES[_parsed(prompt, "bundled_style")[0]]
    return offset + scale * style_score(response)


SCORERS = {"bundled_text": gold_reward, "bundled_smooth": smooth_reward, "bundled_style": style_reward}


class BundledTextReward:
    """A reward of the bundled task: ``bundled_text`` (gold), ``bundled_smooth`` or ``bundled_style``."""

    deterministic = True

    def __init__(self, kind: str = "bundled_text") -> None:
        if kind not in SCORERS:
            raise ValueError(f"unknown bundled reward '{kind}'")
        self.kind = kind

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 media: Sequence[list] | None = None) -> torch.Tensor:
        check_batch(prompts, responses, media)
        score = SCORERS[self.kind]
        values = []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            try:
                values.append(score(p, r))
            except DataError:
                raise RewardError(self.kind, f"reward: not a bundled-task prompt: {last_human_turn(p)[:60]!r}",
                                  index=i) from None
        return to_scores(values, len(prompts), source=f"{self.kind} reward")

    def fingerprint(self) -> str:
        identity = {"kind": self.kind, "version": 1, "ranges": CATEGORY_RANGES}
        if self.kind == "bundled_smooth":
            identity["style_weight"] = STYLE_WEIGHT
        return stable_hash(identity)
