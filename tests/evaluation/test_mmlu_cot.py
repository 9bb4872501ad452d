"""CoT@k and uncertainty-routed CoT@k, with a scripted policy whose routing decisions are known."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from mmalign.config import load_config
from mmalign.config.schemas.mmlu import MMLUEvalConfig
from mmalign.evaluation.mmlu.cot import NEVER, RoutedItem, extract_answer, route, tune_tau, vote
from mmalign.evaluation.mmlu.run import run_mmlu
from mmalign.models.policy import ContinuationScores

A, B, C, D = 0, 1, 2, 3


@pytest.mark.parametrize("text, expected", [
    ("so the answer is (B).", B),
    ("The answer is C because ...", C),
    ("Therefore, the answer is: d", D),
    ("First I thought the answer is (A) but actually the answer is (C)", C),
    ("Answer: B", B),
    ("I pick (D)", D),
    ("the answer is Apple", None),
    ("no idea", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_vote_and_route():
    assert vote([B, B, None, A]) == (B, 0.5)
    assert vote([A, B, B, A]) == (A, 0.5)  # tie: the answer that reached the top count first
    assert vote([None, None]) == (None, 0.0)
    assert route(A, [B, B, B, None], 0.75) == (B, True)
    assert route(A, [B, B, C, None], 0.75) == (A, False)
    assert route(C, [None] * 4, 0.0) == (C, False)
    assert route(A, [B] * 4, NEVER) == (A, False)


class CharTokenizer:
    """One token per character (id = ord + 3); 0 pad, 1 BOS, 2 EOS; never adds special tokens."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def encode(self, text, add_special_tokens=True):
        return [ord(c) + 3 for c in text]

    def decode(self, ids, skip_special_tokens=False):
        ids = [ids] if isinstance(ids, int) else list(ids)
        special = {0: "<pad>", 1: "<s>", 2: "</s>"}
        return "".join(special.get(i, "") if i < 3 else chr(i - 3) for i in ids)


class ScriptedPolicy:
    """A test double of a model behind the scoring interface: the greedy letter and the CoT
    samples of each item are scripted."""

    max_length = 2048

    def __init__(self, script):
        self.script = script  # item id -> (greedy letter index, [CoT answers or None])
        self.chars = CharTokenizer()
        self.sampled = []

    def _item(self, text):
        return re.findall(r"Item (\w+):", text)[-1]

    def tokenize(self, text, *, add_special_tokens=None):
        return self.chars.encode(text)

    def score_continuations(self, contexts, continuations, *, batch_size=16, shared_prefix=True):
        lls = []
        for ctx, cont in zip(contexts, continuations):
            greedy = self.script[self._item(self.chars.decode(ctx))][0]
            letter = self.chars.decode(cont).strip()
            lls.append(-0.1 if "ABCD".index(letter) == greedy else -3.0)
        return ContinuationScores(lls, [False] * len(lls))

    def sample(self, prompts, n=1, *, max_new_tokens=32, temperature=1.0, top_p=1.0, **kw):
        texts = []
        for p in prompts:
            answers = self.script[self._item(p)][1]
            assert len(answers) == n and p.endswith("Answer: Let's think step by step.")
            self.sampled.append(self._item(p))
            texts += [f"Some reasoning. So the answer is ({'ABCD'[a]})." if a is not None else "Not sure." for a in answers]
        return SimpleNamespace(texts=texts)


SCRIPT = {
    # val: the accuracy-maximising threshold is 0.75 (see test_tau_tuned_on_val)
    "v0": (A, [B, B, B, A]),  # gold B: CoT right, share 0.75
    "v1": (C, [D, D, C, A]),  # gold C: greedy right, share 0.5
    "v2": (D, [A, A, A, A]),  # gold A: CoT right, share 1.0
    # test
    "t0": (B, [A, A, A, None]),  # gold A: share 0.75 >= tau -> CoT answer A (right)
    "t1": (B, [C, C, B, A]),  # gold B: share 0.5 < tau -> greedy B (right)
    "t2": (C, [None] * 4),  # gold D: nothing extracted -> greedy C (wrong)
    "t3": (A, [D, D, D, D]),  # gold C: share 1.0 -> CoT answer D (wrong)
}
GOLD = {"v0": B, "v1": C, "v2": A, "t0": A, "t1": B, "t2": D, "t3": C}


@pytest.fixture
def scripted_data(tmp_path):
    for split, ids in (("val", ["v0", "v1", "v2"]), ("test", ["t0", "t1", "t2", "t3"])):
        rows = [{"subject": "philosophy", "question": f"Item {i}: which option?", "choices": ["w", "x", "y", "z"],
                 "answer": "ABCD"[GOLD[i]]} for i in ids]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _cfg(data, *extra):
    return load_config(None, MMLUEvalConfig, [f"data={data}", "model=scripted", "shots=0", "cot.k=4", *extra])


def test_tau_tuned_on_val():
    items = [RoutedItem(*SCRIPT[i], GOLD[i]) for i in ("v0", "v1", "v2")]
    tau, grid = tune_tau(items, 4)
    assert tau == 0.75
    assert {g["tau"]: round(g["acc"], 4) for g in grid} == {0.25: 0.6667, 0.5: 0.6667, 0.75: 1.0, 1.0: 0.6667, NEVER: 0.3333}


def test_uncertainty_routed_cot_end_to_end(scripted_data, tmp_path):
    policy = ScriptedPolicy(SCRIPT)
    result = run_mmlu(_cfg(scripted_data, "mode=ur-cot", f"out={tmp_path / 'out'}"), policy=policy)
    assert result["tau"] == 0.75 and result["k"] == 4
    assert sorted(policy.sampled) == ["t0", "t1", "t2", "t3", "v0", "v1", "v2"]
    assert result["subjects"]["philosophy"]["acc"] == 0.5
    assert result["subjects"]["philosophy"]["greedy_acc"] == 0.25
    assert result["cot_share_used"] == 0.5
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [(p["pred"], p["used_cot"], p["greedy"]) for p in preds] == [(A, True, B), (B, False, B), (C, False, C), (D, True, A)]
    assert "tau = 0.750" in (tmp_path / "out" / "report.md").read_text()


def test_fixed_tau_and_plain_cot(scripted_data):
    fixed = run_mmlu(_cfg(scripted_data, "mode=ur-cot", "cot.tau=0.5"), policy=ScriptedPolicy(SCRIPT))
    assert fixed["tau"] == 0.5 and "tau_grid" not in fixed
    assert fixed["subjects"]["philosophy"]["acc"] == 0.25  # t1 now routes to the CoT answer C
    cot = run_mmlu(_cfg(scripted_data, "mode=cot"), policy=ScriptedPolicy(SCRIPT))
    assert cot["subjects"]["philosophy"]["acc"] == 0.25  # only t0's majority is right


def test_ur_cot_needs_val_split(tmp_path, run_cli, tiny_llama_dir):
    rows = [{"subject": "philosophy", "question": "Item t0: q?", "choices": ["w", "x", "y", "z"], "answer": 0}]
    (tmp_path / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    code, out, err = run_cli("evaluate", "mmlu", "--model", str(tiny_llama_dir), "--data", str(tmp_path),
                             "--shots", "0", "--mode", "ur-cot", "--k", "2", "-q")
    assert code == 2
    assert err.count("\n") == 1 and "val.jsonl" in err and "cot.tau" in err
