import pytest
import torch

from mmalign.errors import ConfigError
from mmalign.rewards import build_reward


def test_python_reward_from_file(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def score(prompts, responses):\n    return [float(r.count('!')) for r in responses]\n")
    r = build_reward({"kind": "python", "function": f"{f}:score"})
    assert r(["a", "b"], ["hi!", "!!"]).tolist() == [1.0, 2.0]
    fp = r.fingerprint()
    f.write_text("def score(prompts, responses):\n    return [0.0 for r in responses]\n")
    assert build_reward({"kind": "python", "function": f"{f}:score"}).fingerprint() != fp


def test_python_reward_from_module():
    r = build_reward({"kind": "python", "function": "mmalign.rewards.bundled:gold_reward"})
    assert r.name == "mmalign.rewards.bundled:gold_reward"


@pytest.mark.parametrize("function, message", [
    ("no_colon", "expected 'package.module:function'"),
    ("missing_file.py:f", "reward.function: file not found: missing_file.py"),
    ("mmalign.nope:f", "reward.function: cannot import module 'mmalign.nope'"),
    ("mmalign.rewards.bundled:nothing", "has no attribute 'nothing'"),
])
def test_python_reward_errors(function, message):
    with pytest.raises(ConfigError, match=message):
        build_reward({"kind": "python", "function": function})


def test_ensemble_is_the_weighted_sum_of_components():
    prompts = ["Human: Count from 1 to 3.\n\nAssistant:"] * 2
    responses = [" 1 2 3", " 1 2 3 4 5 6"]
    gold = build_reward({"kind": "bundled_text"})(prompts, responses)
    length = build_reward({"kind": "rules", "rules": [{"type": "length", "target": 3, "penalty": 1}]})(prompts, responses)
    ens = build_reward({"kind": "ensemble", "components": [
        {"kind": "bundled_text", "weight": 2.0},
        {"kind": "rules", "rules": [{"type": "length", "target": 3, "penalty": 1}], "weight": -0.5},
    ]})
    assert torch.allclose(ens(prompts, responses), 2.0 * gold - 0.5 * length)
    assert ens.deterministic


def test_nested_errors_name_the_component_path():
    with pytest.raises(ConfigError, match=r"reward.components.1.kind: unknown reward kind 'rule' \(did you mean 'rules'\?\)"):
        build_reward({"kind": "ensemble", "components": [{"kind": "bundled_text"}, {"kind": "rule"}]})
    with pytest.raises(ConfigError, match=r"reward.components.0.rules.0.type: unknown rule type"):
        build_reward({"kind": "ensemble", "components": [{"kind": "rules", "rules": [{"type": "x"}]}]})
    with pytest.raises(ConfigError, match=r"unknown key 'reward.components.0.pth' \(did you mean 'path'\?\)"):
        build_reward({"kind": "ensemble", "components": [{"kind": "hf_classifier", "pth": "x"}]})
