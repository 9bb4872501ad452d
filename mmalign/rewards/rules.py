"""Rule rewards: built-in, deterministic scorers combined as a weighted sum.

``reward: {kind: rules, rules: [...]}`` where each rule is a dict with a ``type``, an optional
``weight`` (default 1) and an optional ``when`` (a regex on the prompt; the rule scores 0 on
prompts it does not match). Types:

* ``length``: ``-penalty * distance`` of the response length (``unit``: words | chars) outside
  ``[min, max]`` (or from ``target``); 0 when inside.
* ``regex``: 1 if ``pattern`` is found in the response (``count: true`` counts matches;
  ``negate: true`` rewards absence).
* ``keywords``: ``words`` present in the response; ``mode`` any | all (1/0) or fraction.
* ``format``: fraction of the given checks that pass: ``starts_with``, ``ends_with``,
  ``max_lines``, ``min_words``, ``max_words``, ``nonempty``.
* ``exact_match``: 1 if the (normalised) answer extracted from the response equals the prompt's
  gold answer, from ``answers`` (a ``{prompt: answer}`` mapping) or ``answers_file`` (a dataset
  with ``prompt_field`` / ``answer_field`` columns); ``extract`` is a regex whose group 1 is the answer.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mmalign.errors import ConfigError, DataError
from mmalign.rewards.base import check_batch, stable_hash, to_scores

RULE_KEYS: dict[str, set[str]] = {
    "length": {"target", "min", "max", "unit", "penalty"},
    "regex": {"pattern", "ignorecase", "count", "negate"},
    "keywords": {"words", "mode", "ignorecase"},
    "format": {"starts_with", "ends_with", "max_lines", "min_words", "max_words", "nonempty", "strip"},
    "exact_match": {"answers", "answers_file", "prompt_field", "answer_field", "extract", "normalize"},
}
COMMON_KEYS = {"type", "weight", "when", "name"}

Scorer = Callable[[str, str], float]


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace and drop surrounding punctuation."""
    return " ".join(text.lower().split()).strip(" .,!?;:'\"")


def _num(spec: dict, key: str, where: str, default: Any = None, *, minimum: float | None = None) -> Any:
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}.{key}: must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}.{key}: must be >= {minimum}, got {value}")
    return value


def _regex(pattern: Any, where: str, flags: int = 0) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: must be a non-empty regular expression")
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regular expression ({exc})") from None


def _length(spec: dict, where: str) -> Scorer:
    unit = spec.get("unit", "words")
    if unit not in ("words", "chars"):
        raise ConfigError(f"{where}.unit: must be one of words, chars; got '{unit}'")
    target = _num(spec, "target", where, minimum=0)
    lo = _num(spec, "min", where, target, minimum=0)
    hi = _num(spec, "max", where, target, minimum=0)
    if lo is None and hi is None:
        raise ConfigError(f"{where}: a length rule needs 'target' or 'min'/'max'")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"{where}.min: must be <= max ({lo} > {hi})")
    penalty = _num(spec, "penalty", where, 1.0 / max(1.0, float(hi or lo or 1)), minimum=0)

    def score(prompt: str, response: str) -> float:
        n = len(response.split()) if unit == "words" else len(response.strip())
        below = max(0.0, lo - n) if lo is not None else 0.0
        above = max(0.0, n - hi) if hi is not None else 0.0
        return -penalty * (below + above)

    return score


def _regex_rule(spec: dict, where: str) -> Scorer:
    flags = re.IGNORECASE if spec.get("ignorecase", False) else 0
    pattern = _regex(spec.get("pattern"), f"{where}.pattern", flags)
    count, negate = bool(spec.get("count", False)), bool(spec.get("negate", False))

    def score(prompt: str, response: str) -> float:
        if count:
            return float(len(pattern.findall(response)))
        found = pattern.search(response) is not None
        return float(found != negate)

    return score


def _keywords(spec: dict, where: str) -> Scorer:
    words = spec.get("words")
    if not isinstance(words, (list, tuple)) or not words or not all(isinstance(w, str) and w for w in words):
        raise ConfigError(f"{where}.words: must be a non-empty list of strings")
    mode = spec.get("mode", "any")
    if mode not in ("any", "all", "fraction"):
        raise ConfigError(f"{where}.mode: must be one of any, all, fraction; got '{mode}'")
    flags = re.IGNORECASE if spec.get("ignorecase", True) else 0
    patterns = [re.compile(r"(?<!\w)" + re.escape(w) + r"(?!\w)", flags) for w in words]

    def score(prompt: str, response: str) -> float:
        hits = [p.search(response) is not None for p in patterns]
        if mode == "any":
            return float(any(hits))
        if mode == "all":
            return float(all(hits))
        return sum(hits) / len(hits)

    return score


def _format(spec: dict, where: str) -> Scorer:
    checks: list[Callable[[str], bool]] = []
    strip = bool(spec.get("strip", True))
    for key in ("starts_with", "ends_with"):
        if key in spec:
            value = spec[key]
            options = [value] if isinstance(value, str) else value
            if not isinstance(options, (list, tuple)) or not options or not all(isinstance(o, str) for o in options):
                raise ConfigError(f"{where}.{key}: must be a string or a list of strings")
            method = str.startswith if key == "starts_with" else str.endswith
            checks.append(lambda r, m=method, o=tuple(options): m(r, o))
    if spec.get("max_lines") is not None:
        n = _num(spec, "max_lines", where, minimum=1)
        checks.append(lambda r, n=n: len(r.splitlines()) <= n)
    if spec.get("min_words") is not None:
        n = _num(spec, "min_words", where, minimum=0)
        checks.append(lambda r, n=n: len(r.split()) >= n)
    if spec.get("max_words") is not None:
        n = _num(spec, "max_words", where, minimum=0)
        checks.append(lambda r, n=n: len(r.split()) <= n)
    if spec.get("nonempty"):
        checks.append(lambda r: bool(r.strip()))
    if not checks:
        raise ConfigError(f"{where}: a format rule needs at least one check ({', '.join(sorted(RULE_KEYS['format']))})")

    def score(prompt: str, response: str) -> float:
        text = response.strip() if strip else response
        return sum(check(text) for check in checks) / len(checks)

    return score


def _exact_match(spec: dict, where: str) -> Scorer:
    answers = spec.get("answers")
    if answers is not None and spec.get("answers_file") is not None:
        raise ConfigError(f"{where}: give either 'answers' or 'answers_file', not both")
    if spec.get("answers_file") is not None:
        answers = _read_answers(spec, where)
    if not isinstance(answers, dict) or not answers:
        raise ConfigError(f"{where}.answers: must be a non-empty mapping of prompt to answer (or use answers_file)")
    extract = _regex(spec["extract"], f"{where}.extract") if spec.get("extract") is not None else None
    normalize = bool(spec.get("normalize", True))
    norm = normalize_answer if normalize else (lambda s: s.strip())
    gold = {str(k): norm(str(v)) for k, v in answers.items()}

    def score(prompt: str, response: str) -> float:
        if prompt not in gold:
            raise DataError(f"exact_match rule ({where}): no gold answer for prompt {prompt[:60]!r}")
        text = response
        if extract is not None:
            m = extract.search(response)
            if m is None:
                return 0.0
            text = m.group(1) if m.groups() else m.group(0)
        return float(norm(text) == gold[prompt])

    return score


def _read_answers(spec: dict, where: str) -> dict[str, str]:
    from mmalign.data.readers import read_rows

    path = spec["answers_file"]
    if not isinstance(path, str) or not Path(path).exists():
        raise ConfigError(f"{where}.answers_file: file not found: {path}")
    pf, af = spec.get("prompt_field", "prompt"), spec.get("answer_field", "answer")
    out: dict[str, str] = {}
    for loc, row in read_rows(path):
        if pf not in row or af not in row:
            missing = pf if pf not in row else af
            raise DataError(f"{loc}: missing field '{missing}'")
        out[str(row[pf])] = str(row[af])
    return out


BUILDERS: dict[str, Callable[[dict, str], Scorer]] = {
    "length": _length,
    "regex": _regex_rule,
    "keywords": _keywords,
    "format": _format,
    "exact_match": _exact_match,
}


class Rule:
    """One configured rule: a scorer, its weight and an optional prompt filter."""

    def __init__(self, spec: dict, where: str) -> None:
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: each rule must be a mapping with a 'type'")
        kind = spec.get("type")
        if kind not in BUILDERS:
            close = difflib.get_close_matches(str(kind), BUILDERS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(BUILDERS)})"
            raise ConfigError(f"{where}.type: unknown rule type '{kind}'{hint}")
        allowed = RULE_KEYS[kind] | COMMON_KEYS
        for key in spec:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{where}: unknown key '{key}' for a {kind} rule{hint}")
        self.kind = kind
        self.weight = float(_num(spec, "weight", where, 1.0))
        self.when = _regex(spec["when"], f"{where}.when") if spec.get("when") is not None else None
        self.scorer = BUILDERS[kind](spec, where)

    def __call__(self, prompt: str, response: str) -> float:
        if self.when is not None and self.when.search(prompt) is None:
            return 0.0
        return self.weight * self.scorer(prompt, response)


class RulesReward:
    """Weighted sum of rules; deterministic."""

    deterministic = True

    def __init__(self, rules: Sequence[dict], where: str = "reward.rules") -> None:
        if not rules:
            raise ConfigError(f"{where}: a rules reward needs at least one rule")
        self.specs = [dict(r) if isinstance(r, dict) else r for r in rules]
        self.rules = [Rule(spec, f"{where}.{i}") for i, spec in enumerate(self.specs)]

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 media: Sequence[list] | None = None) -> torch.Tensor:
        check_batch(prompts, responses, media)
        values = [sum(rule(p, r) for rule in self.rules) for p, r in zip(prompts, responses)]
        return to_scores(values, len(prompts), source="rules reward")

    def fingerprint(self) -> str:
        files = {}
        for spec in self.specs:
            path = spec.get("answers_file") if isinstance(spec, dict) else None
            if path and Path(path).is_file():
                files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return stable_hash({"kind": "rules", "rules": self.specs, "answers": files})
