import json

import pytest

from mmalign.errors import ConfigError, DataError
from mmalign.rewards import build_reward


def score(rules, prompt, response):
    return build_reward({"kind": "rules", "rules": rules})([prompt], [response]).item()


def test_length_rule_target_and_bounds():
    assert score([{"type": "length", "target": 3, "penalty": 0.5}], "p", "a b c") == 0.0
    assert score([{"type": "length", "target": 3, "penalty": 0.5}], "p", "a b c d e") == -1.0
    assert score([{"type": "length", "min": 2, "max": 4, "unit": "chars"}], "p", "abc") == 0.0
    assert score([{"type": "length", "min": 2, "max": 4, "unit": "chars", "penalty": 1}], "p", "abcdef") == -2.0


def test_regex_keywords_format_rules():
    assert score([{"type": "regex", "pattern": r"\d+"}], "p", "it is 42") == 1.0
    assert score([{"type": "regex", "pattern": r"\d", "count": True}], "p", "1 2 3") == 3.0
    assert score([{"type": "regex", "pattern": "sorry", "negate": True}], "p", "Sorry!") == 1.0
    assert score([{"type": "regex", "pattern": "sorry", "ignorecase": True, "negate": True}], "p", "Sorry!") == 0.0
    assert score([{"type": "keywords", "words": ["red", "blue"], "mode": "all"}], "p", "Red and blue") == 1.0
    assert score([{"type": "keywords", "words": ["red", "blue"], "mode": "fraction"}], "p", "reddish blue") == 0.5
    fmt = {"type": "format", "starts_with": "Hello", "ends_with": ["!", "."], "max_words": 3}
    assert score([fmt], "p", " Hello there!") == 1.0
    assert score([fmt], "p", "Hello there, how are you?") == pytest.approx(1 / 3)


def test_exact_match_inline_and_file(tmp_path):
    rule = {"type": "exact_match", "answers": {"2+2?": "4"}, "extract": r"answer is (\w+)"}
    assert score([rule], "2+2?", "The answer is 4.") == 1.0
    assert score([rule], "2+2?", "The answer is 5.") == 0.0
    f = tmp_path / "answers.jsonl"
    f.write_text(json.dumps({"question": "Capital of France?", "gold": "Paris"}) + "\n")
    rule = {"type": "exact_match", "answers_file": str(f), "prompt_field": "question", "answer_field": "gold"}
    assert score([rule], "Capital of France?", " paris. ") == 1.0
    with pytest.raises(DataError, match="no gold answer"):
        score([rule], "Unknown?", "x")


def test_weights_and_when_combine():
    rules = [
        {"type": "regex", "pattern": "yes", "weight": 2.0},
        {"type": "length", "target": 1, "penalty": 1.0, "weight": 0.5, "when": "^short"},
    ]
    assert score(rules, "short please", "yes yes yes") == pytest.approx(2.0 - 0.5 * 2)
    assert score(rules, "long is fine", "yes yes yes") == pytest.approx(2.0)


@pytest.mark.parametrize("rules, message", [
    ([{"type": "regexp", "pattern": "x"}], r"reward.rules.0.type: unknown rule type 'regexp' \(did you mean 'regex'\?\)"),
    ([{"type": "regex", "pattern": "("}], r"reward.rules.0.pattern: invalid regular expression"),
    ([{"type": "length"}], r"reward.rules.0: a length rule needs 'target'"),
    ([{"type": "keywords", "words": []}], r"reward.rules.0.words: must be a non-empty list"),
    ([{"type": "regex", "pattern": "x"}, {"type": "format"}], r"reward.rules.1: a format rule needs at least one check"),
    ([{"type": "regex", "pattern": "x", "weight": "heavy"}], r"reward.rules.0.weight: must be a number"),
])
def test_rule_config_errors_name_the_key(rules, message):
    with pytest.raises(ConfigError, match=message):
        build_reward({"kind": "rules", "rules": rules})


def test_fingerprint_depends_on_rules():
    a = build_reward({"kind": "rules", "rules": [{"type": "regex", "pattern": "x"}]})
    b = build_reward({"kind": "rules", "rules": [{"type": "regex", "pattern": "x"}]})
    c = build_reward({"kind": "rules", "rules": [{"type": "regex", "pattern": "y"}]})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
