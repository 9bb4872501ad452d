"""Our MMLU numbers equal lm-evaluation-harness's ``hf`` model on the same local files."""

from __future__ import annotations

import math

import pytest

lm_eval = pytest.importorskip("lm_eval")

from mmalign.evaluation.mmlu.data import load_mmlu, sample_dir  # noqa: E402
from mmalign.evaluation.mmlu.lm_eval_tasks import (  # noqa: E402
    lm_eval_predictions,
    run_lm_eval_hf,
    write_lm_eval_tasks,
)
from mmalign.evaluation.mmlu.metrics import aggregate  # noqa: E402
from mmalign.evaluation.mmlu.scorer import score_loglik  # noqa: E402
from mmalign.models.loading import load_policy  # noqa: E402


@pytest.fixture(scope="module")
def long_llama_dir(tmp_path_factory):
    """A tiny Llama whose context fits the 5-shot prompts, so the prefix-cache path is taken."""
    from mmalign.models.toy import SAMPLE_TEXT, build_tiny_llama

    texts = SAMPLE_TEXT * 10 + [p.read_text() for p in sorted(sample_dir().rglob("*.csv"))]
    return build_tiny_llama(tmp_path_factory.mktemp("long_llama"), texts, vocab_size=512, seed=1, max_position=2048)


@pytest.fixture(scope="module")
def data():
    return load_mmlu(sample_dir())


def _compare(model_dir, data, shots, tmp_path, *, expect_cache: bool, limit: int | None = None):
    subjects = data.select(None)
    policy = load_policy(model_dir, device="cpu", dtype="float32")
    stats: dict[str, int] = {}
    ours = score_loglik(policy, data, subjects, shots=shots, batch_size=8, limit=limit, stats=stats)
    tasks = write_lm_eval_tasks(data, subjects, tmp_path / "tasks")
    theirs = run_lm_eval_hf(model_dir, tmp_path / "tasks", tasks, shots=shots, batch_size=4, limit=limit)
    table = aggregate({s: {"acc": [r.acc for r in rs], "acc_norm": [r.acc_norm for r in rs]} for s, rs in ours.items()},
                      ("acc", "acc_norm"))
    for subject, task in zip(subjects, tasks):
        ref = theirs["results"][task]
        mine = table["subjects"][subject]
        assert mine["acc"] == ref["acc,none"], subject
        assert mine["acc_norm"] == ref["acc_norm,none"], subject
        assert math.isclose(mine["acc_stderr"], ref["acc_stderr,none"], rel_tol=1e-12), subject
        preds = lm_eval_predictions(theirs, task)
        assert [r.pred for r in ours[subject]] == [p[0] for p in preds], subject
        assert [r.pred_norm for r in ours[subject]] == [p[1] for p in preds], subject
        for r, (_, _, lls) in zip(ours[subject], preds):
            assert r.lls == pytest.approx(lls, abs=2e-4)
    # the cache was (or was not) used, and the check against a plain forward pass passed
    assert (stats["prefix_tokens"] > 0) == expect_cache
    assert stats["prefix_check_failures"] == 0


@pytest.mark.parametrize("shots", [0, 5])
def test_matches_lm_eval_hf_on_tiny_model(tiny_llama_dir, data, shots, tmp_path):
    # the fixture model's 512-token window truncates most 5-shot prompts: lm-eval's left truncation
    _compare(tiny_llama_dir, data, shots, tmp_path, expect_cache=True)


def test_matches_lm_eval_hf_with_prefix_cache_5shot(long_llama_dir, data, tmp_path):
    _compare(long_llama_dir, data, 5, tmp_path, expect_cache=True)


def test_prefix_cache_changes_nothing(long_llama_dir, data):
    subjects = data.select(None)[:2]
    policy = load_policy(long_llama_dir, device="cpu", dtype="float32")
    fast, plain = {}, {}
    a = score_loglik(policy, data, subjects, shots=5, batch_size=8, limit=6, stats=fast)
    b = score_loglik(policy, data, subjects, shots=5, batch_size=3, limit=6, shared_prefix=False, stats=plain)
    assert fast["forward_tokens"] < plain["forward_tokens"] / 2 and plain["prefix_tokens"] == 0
    for s in subjects:
        assert [r.pred for r in a[s]] == [r.pred for r in b[s]]
        for x, y in zip(a[s], b[s]):
            assert x.lls == pytest.approx(y.lls, abs=1e-4)


def test_contexts_are_lm_eval_contexts(data, tmp_path):
    """The exact (context, continuation) strings lm-eval builds, from a recording LM."""
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    from mmalign.evaluation.mmlu.prompts import CONTINUATIONS, context, fewshot_prefix

    seen = []

    class Recorder(LM):
        def loglikelihood(self, requests, disable_tqdm=False):
            seen.extend(r.args for r in requests)
            return [(0.0, False)] * len(requests)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm=False):
            raise NotImplementedError

    subjects = ["philosophy", "elementary_mathematics"]
    tasks = write_lm_eval_tasks(data, subjects, tmp_path)
    lm_eval.simple_evaluate(model=Recorder(), tasks=tasks, num_fewshot=5, bootstrap_iters=0,
                            task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    expected = {(context(fewshot_prefix(s, data.get("dev", s)[:5]), q), c)
                for s in subjects for q in data.get("test", s) for c in CONTINUATIONS}
    assert set(seen) == expected
    assert len(seen) == len(expected)
