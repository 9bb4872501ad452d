"""The lm-eval adapter: an mmalign model registered as lm-eval's ``mmalign`` model."""

from __future__ import annotations

import pytest

lm_eval = pytest.importorskip("lm_eval")

from mmalign.evaluation.mmlu.data import load_mmlu, sample_dir  # noqa: E402
from mmalign.evaluation.mmlu.lm_eval_tasks import lm_eval_predictions, write_lm_eval_tasks  # noqa: E402
from mmalign.evaluation.mmlu.scorer import score_loglik  # noqa: E402
from mmalign.models.loading import load_policy  # noqa: E402


def test_adapter_runs_lm_eval_tasks_like_our_scorer(tiny_llama_dir, tmp_path):
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from mmalign.evaluation.lm_eval_adapter import MMAlignLM

    assert get_model("mmalign") is MMAlignLM
    data = load_mmlu(sample_dir())
    subjects = ["astronomy", "philosophy"]
    tasks = write_lm_eval_tasks(data, subjects, tmp_path)
    res = lm_eval.simple_evaluate(model="mmalign", model_args=f"pretrained={tiny_llama_dir},batch_size=8", tasks=tasks,
                                  num_fewshot=0, limit=6, bootstrap_iters=0, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    ours = score_loglik(load_policy(tiny_llama_dir, device="cpu", dtype="float32"), data, subjects, shots=0, limit=6)
    for subject, task in zip(subjects, tasks):
        assert [r.pred for r in ours[subject]] == [p[0] for p in lm_eval_predictions(res, task)]
        assert res["results"][task]["acc,none"] == sum(r.acc for r in ours[subject]) / 6


def test_adapter_rolling_and_generation_match_hflm(tiny_llama_dir):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from mmalign.evaluation.lm_eval_adapter import MMAlignLM

    ours = MMAlignLM(pretrained=str(tiny_llama_dir), batch_size=4)
    ref = HFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=4, dtype="float32")
    text = "The quick brown fox jumps over the lazy dog. " * 3
    roll = [Instance("loglikelihood_rolling", {}, (text,), 0)]
    assert ours.loglikelihood_rolling(roll)[0] == pytest.approx(ref.loglikelihood_rolling(roll)[0], abs=1e-3)
    ll = [Instance("loglikelihood", {}, ("Answer:", " A"), 0), Instance("loglikelihood", {}, ("", "Paris"), 1)]
    for (a, ga), (b, gb) in zip(ours.loglikelihood(ll), ref.loglikelihood(ll)):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    gen = [Instance("generate_until", {}, ("Human: hi", {"until": ["\n"], "max_gen_toks": 8}), 0)]
    assert ours.generate_until(gen) == ref.generate_until(gen)
