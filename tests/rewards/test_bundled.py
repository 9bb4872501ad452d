"""The bundled text task: its gold reward, its data, and why calibration changes rankings."""

import filecmp

import pytest
import torch

from mmalign.align.calibration import calibrate
from mmalign.data import load_preferences, load_prompts, load_sft
from mmalign.data.tasks import BUNDLED_DIR, TEXT_SETS
from mmalign.errors import DataError
from mmalign.rewards import build_reward
from mmalign.rewards.bundled import CATEGORY_RANGES, gold_reward, parse_prompt
from tests.scripts.loading import load_script


def test_generator_reproduces_the_committed_files(tmp_path):
    module = load_script("make_bundled_task")
    module.main(["--out", str(tmp_path)], _log=lambda _: None)
    for name in TEXT_SETS:
        assert filecmp.cmp(tmp_path / f"{name}.jsonl", BUNDLED_DIR / "text" / f"{name}.jsonl", shallow=False), name


def test_bundled_sets_load_and_every_prompt_parses():
    prompts = load_prompts("bundled:text/prompts_train") + load_prompts("bundled:text/prompts_eval")
    assert len(prompts) == 900
    for rec in prompts:
        parsed = parse_prompt(rec.prompt)
        assert parsed is not None and parsed[0] == rec.meta["category"], rec.source
    assert {r.meta["category"] for r in prompts} == set(CATEGORY_RANGES)


def test_gold_reward_ranges_and_preference_labels():
    reward = build_reward({"kind": "bundled_text"})
    prefs = load_preferences("bundled:text/prefs_eval")
    chosen = reward([p.prompt for p in prefs], [p.chosen for p in prefs])
    rejected = reward([p.prompt for p in prefs], [p.rejected for p in prefs])
    assert bool((chosen > rejected).all())
    assert torch.allclose(chosen, torch.tensor([p.meta["chosen_reward"] for p in prefs]), atol=1e-3)
    for p, c in zip(prefs, chosen.tolist()):
        lo, scale = CATEGORY_RANGES[p.meta["category"]]
        assert lo <= c <= lo + scale


def test_gold_reward_grades_answers():
    count = "Human: Count from 3 to 6.\n\nAssistant:"
    assert gold_reward(count, " 3 4 5 6") == 1.0
    assert gold_reward(count, " 3 4 6") == pytest.approx(0.5)
    assert gold_reward(count, " 3 4 5 6\n\nHuman: more") == 0.5
    colours = "Human: Hi there!\n\nAssistant: Hello! How can I help you today?\n\nHuman: Name two colours.\n\nAssistant:"
    assert gold_reward(colours, " red, blue") == 100.0
    assert gold_reward(colours, " red, red") == pytest.approx(50 + 50 * (0.5 - 0.25))
    greet = "Human: Greet Anna politely.\n\nAssistant:"
    assert gold_reward(greet, " Hello Anna, nice to meet you!") == 50.0
    assert gold_reward(greet, " Go away, Anna.") == -50.0
    assert gold_reward("Human: What is 4 plus 5?\n\nAssistant:", " 9") == 7.0


def test_sft_demonstrations_are_mostly_but_not_all_perfect():
    sft = load_sft("bundled:text/sft_train")
    reward = build_reward({"kind": "bundled_text"})
    scores = reward([s.prompt for s in sft], [s.response for s in sft])
    best = torch.tensor([sum(CATEGORY_RANGES[s.meta["category"]]) for s in sft])
    perfect = (scores == best).float().mean().item()
    assert 0.7 < perfect < 0.95


def test_unknown_prompt_is_a_data_error():
    with pytest.raises(DataError, match="bundled_text reward: not a bundled-task prompt: 'Hi' for prompt index 1$"):
        build_reward({"kind": "bundled_text"})(["Human: Count from 1 to 3.\n\nAssistant:", "Human: Hi\n\nAssistant:"],
                                               [" 1 2 3", " hi"])


# The documented example (docs/bundled_tasks.md): one prompt per category, four reference samples
# each, and two fixed policies. A is perfect on the two high-range categories and fails the rest;
# B is perfect on the four low-range ones and middling on the other two.
PROMPTS = [
    "Human: Count from 1 to 4.\n\nAssistant:",
    "Human: Name three colours.\n\nAssistant:",
    "Human: What rhymes with cat?\n\nAssistant:",
    "Human: What is 2 plus 5?\n\nAssistant:",
    "Human: Write the word dog in capital letters.\n\nAssistant:",
    "Human: Greet Anna politely.\n\nAssistant:",
]
REFERENCE = [
    [" 1 2 3 4", " 1 2 3", " 1 2 4", " I don't know."],
    [" red, blue, green", " red, blue", " red, dog, blue", " I like colours."],
    [" hat", " cat", " dog", " The word bat rhymes with cat."],
    [" 7", " 8", " 6", " The answer is 7."],
    [" DOG", " dog", " Dog", " CAT"],
    [" Hello Anna, nice to meet you!", " Hello Anna", " Hello, nice to meet you!", " Go away, Anna."],
]
POLICY_A = [" I don't know.", " red, blue, green", " I don't know.", " I don't know.", " I don't know.",
            " Hello Anna, nice to meet you!"]
POLICY_B = [" 1 2 3 4", " red, blue", " hat", " 7", " DOG", " Hello, nice to meet you!"]


def test_raw_and_calibrated_rewards_rank_two_policies_differently():
    reward = build_reward({"kind": "bundled_text"})
    ref = torch.stack([reward([p] * len(ys), ys) for p, ys in zip(PROMPTS, REFERENCE)])  # [6, 4]
    raw_a, raw_b = reward(PROMPTS, POLICY_A), reward(PROMPTS, POLICY_B)
    cal = calibrate(ref, torch.stack([raw_a, raw_b], dim=1))  # [6, 2]
    cal_a, cal_b = cal[:, 0], cal[:, 1]
    assert raw_a.mean() > raw_b.mean()  # raw: A wins (22.50 vs 17.56)
    assert cal_b.mean() > cal_a.mean()  # calibrated: B wins (0.74 vs 0.35)
    assert raw_a.mean().item() == pytest.approx(22.5)
    assert raw_b.mean().item() == pytest.approx((1 + 83.3333 - 16 + 7 + 20 + 10) / 6, abs=1e-3)


def test_smooth_reward_breaks_ties_and_keeps_the_task_ranking():
    from mmalign.rewards.bundled import STYLE_WEIGHT, style_score

    gold, smooth = build_reward({"kind": "bundled_text"}), build_reward({"kind": "bundled_smooth"})
    assert gold.fingerprint() != smooth.fingerprint()
    # rhyme demonstrations: many distinct responses share a gold reward, almost none a smooth one
    sft = [r for r in load_sft("bundled:text/sft_train") if r.meta.get("category") == "rhyme"]
    by_response = {r.response: r.prompt for r in sft}  # one prompt per distinct response
    responses = sorted(by_response)
    prompt = "Human: Tell me a word that rhymes with cat.\n\nAssistant:"
    g, s = gold([prompt] * len(responses), responses), smooth([prompt] * len(responses), responses)
    assert len(responses) > 50
    assert len(set(g.tolist())) < len(responses) / 4
    assert len(set(s.tolist())) >= 0.95 * len(responses)
    # a better answer still wins whatever its style: the style term spans less than one quality step
    rhyme = "Human: Tell me a word that rhymes with 'cat'.\n\nAssistant:"
    assert parse_prompt(rhyme)[0] == "rhyme"
    right, wrong = smooth([rhyme, rhyme], [" hat", " dog"]).tolist()
    assert right > wrong
    lo, scale = CATEGORY_RANGES["rhyme"]
    assert right == pytest.approx(lo + scale * (1.0 + STYLE_WEIGHT * style_score(" hat")) / (1 + STYLE_WEIGHT))
    assert style_score("hat") != style_score("bat") and style_score("") == 0.0


def test_style_reward_is_the_style_score_on_the_category_scale():
    from mmalign.rewards.bundled import style_score

    style = build_reward({"kind": "bundled_style"})
    assert style.fingerprint() not in {build_reward({"kind": k}).fingerprint() for k in ("bundled_text", "bundled_smooth")}
    greet, count = "Human: Greet Anna politely.\n\nAssistant:", "Human: Count from 3 to 6.\n\nAssistant:"
    values = style([greet, count, count], [" Hello Anna!", " 3 4 5 6", " 3 4 5"]).tolist()
    assert values[0] == pytest.approx(-50.0 + 100.0 * style_score(" Hello Anna!"))
    assert values[1] == pytest.approx(style_score(" 3 4 5 6")) and values[1] != values[2]
    with pytest.raises(DataError, match="bundled_style"):
        style(["Human: Hi\n\nAssistant:"], [" hello"])
