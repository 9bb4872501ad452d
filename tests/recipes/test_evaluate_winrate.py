"""`mmalign evaluate winrate` end to end on tiny models: results, report, plots, and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mmalign.evaluation.stats import bootstrap_ci


def _config(tmp_path, policy, reference, **extra):
    cfg = {
        "recipe": "evaluate_winrate",
        "run": {"name": "wr", "output_dir": str(tmp_path / "runs"), "seed": 3, "device": "cpu"},
        "policy": {"path": str(policy)},
        "reference": {"path": str(reference)},
        "prompts": {"path": "bundled:text/prompts_eval", "max_rows": 3},
        "selection_reward": {"kind": "bundled_text"},
        "procedures": [{"name": "standard", "n": 1}, {"name": "bon", "n": 2}, {"name": "won", "n": 2}],
        "samples_per_prompt": 3,
        "sampling": {"max_new_tokens": 6},
        "bootstrap_reps": 200,
        "frontier": {"points": 3, "transforms": ["identity"]},
    }
    cfg.update(extra)
    path = tmp_path / "wr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_policy_against_itself(tmp_path, tiny_llama_dir, run_cli):
    code, out, err = run_cli("evaluate", "winrate", _config(tmp_path, tiny_llama_dir, tiny_llama_dir), "--quiet")
    assert code == 0, err
    run = tmp_path / "runs/wr"
    results = json.loads((run / "results.json").read_text())
    # Same weights: the exact sequence log-ratio is zero for every sample.
    assert results["kl"] == pytest.approx(0.0, abs=1e-5)
    labels = [w["label"] for w in results["win_rates"]]
    assert labels == ["standard", "best-of-2", "worst-of-2"]
    for w in results["win_rates"]:
        # the estimate is the mean over the 3 prompts; its interval is the bootstrap over those
        # prompts with the configured reps and seed
        assert w["num_prompts"] == len(w["per_prompt"]) == 3
        assert w["win_rate"] == pytest.approx(sum(w["per_prompt"]) / 3)
        assert (w["ci_low"], w["ci_high"]) == pytest.approx(bootstrap_ci(np.array(w["per_prompt"]), reps=200, seed=3))
    report = (run / "report.md").read_text()
    assert "best-of-2" in report and "KL" in report
    for plot in results["plots"]:
        assert (run / plot).stat().st_size > 1000
    assert (run / "DONE").exists()


def test_identical_deterministic_draws_tie_exactly(tmp_path, tiny_llama_dir, run_cli):
    """top_k=1 makes both (identical) models emit the same text for a prompt, so every comparison
    is a tie, which counts one half: each procedure's win rate and interval is exactly 0.5."""
    cfg = _config(tmp_path, tiny_llama_dir, tiny_llama_dir, sampling={"max_new_tokens": 6, "top_k": 1})
    code, _, err = run_cli("evaluate", "winrate", cfg, "--quiet")
    assert code == 0, err
    results = json.loads((tmp_path / "runs/wr/results.json").read_text())
    assert results["policy_judge_reward_mean"] == results["reference_judge_reward_mean"]
    for w in results["win_rates"]:
        assert w["per_prompt"] == [0.5, 0.5, 0.5] and w["win_rate"] == w["ci_low"] == w["ci_high"] == 0.5, w


def test_too_few_samples_for_procedure(tmp_path, tiny_llama_dir, run_cli):
    cfg = _config(tmp_path, tiny_llama_dir, tiny_llama_dir, samples_per_prompt=2,
                  procedures=[{"name": "bon", "n": 4}])
    code, _, err = run_cli("evaluate", "winrate", cfg)
    assert code == 2 and "samples_per_prompt" in err and len(err.strip().splitlines()) == 1


def test_reference_draws_do_not_depend_on_the_policy(tmp_path, tiny_llama_dir, run_cli):
    """Two evaluations with the same seed and reference, but different policies, see the same reference
    samples, so methods are compared against identical reference draws (paired comparisons)."""
    from mmalign.models.toy import SAMPLE_TEXT, build_tiny_llama

    other = build_tiny_llama(tmp_path / "other", SAMPLE_TEXT * 20, vocab_size=384, seed=5)
    # Same tokenizer is not needed for the reference draws; only the reference model and seed matter.
    runs = []
    for name, policy in (("a", tiny_llama_dir), ("b", other)):
        cfg = _config(tmp_path, policy, tiny_llama_dir, run={"name": name, "output_dir": str(tmp_path / "runs"),
                                                              "seed": 3, "device": "cpu"})
        code, _, err = run_cli("evaluate", "winrate", cfg, "--quiet")
        assert code == 0, err
        runs.append(json.loads((tmp_path / "runs" / name / "results.json").read_text()))
    assert runs[0]["reference_judge_reward_mean"] == runs[1]["reference_judge_reward_mean"]
    assert all(len(w["per_prompt"]) == 3 for w in runs[0]["win_rates"])


def test_kl_is_the_exact_per_token_kl_and_agrees_with_the_log_ratio(tmp_path, tiny_llama_dir, run_cli):
    """A perturbed copy of the reference: the reported KL (exact per-token KL over the policy's own
    states) is positive, agrees with the log-ratio estimate within their errors, and is less noisy."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    policy_dir = tmp_path / "perturbed"
    shutil.copytree(tiny_llama_dir, policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.add_(3.0 * head.std() * torch.randn_like(head))
    model.save_pretrained(policy_dir)
    cfg = _config(tmp_path, policy_dir, tiny_llama_dir, samples_per_prompt=16,
                  prompts={"path": "bundled:text/prompts_eval", "max_rows": 8})
    code, _, err = run_cli("evaluate", "winrate", cfg, "--quiet")
    assert code == 0, err
    r = json.loads((tmp_path / "runs/wr/results.json").read_text())
    assert r["kl_estimator"] == "token_kl" and r["kl"] > 0.05
    assert abs(r["kl"] - r["kl_log_ratio"]) < 3 * (r["kl_se"] ** 2 + r["kl_log_ratio_se"] ** 2) ** 0.5
    assert r["kl_se"] < r["kl_log_ratio_se"]
    per_prompt = r["kl_per_prompt"]
    assert len(per_prompt) == 8 and min(per_prompt) >= 0.0
    assert abs(sum(per_prompt) / len(per_prompt) - r["kl"]) < 1e-6
    assert "exact per-token KL" in (tmp_path / "runs/wr/report.md").read_text()


def test_kept_sampler_distributions_give_the_recomputed_kl(tiny_llama_dir):
    """The KL from the distributions the policy's sampler kept equals the KL from recomputing them
    per sample (it would not if the kept steps were misaligned with the response tokens), and
    warped sampling or a budget too small for them falls back to recomputing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmalign.config.schemas.winrate import EvalSamplingConfig
    from mmalign.models.policy import Prompt
    from mmalign.models.text import TextPolicy
    from mmalign.recipes import evaluate_winrate as ew

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    reference = TextPolicy(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tok).freeze()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.add_(2.0 * head.std() * torch.randn_like(head))
    policy = TextPolicy(model, tok).freeze()
    prompts = [Prompt(text="the cat"), Prompt(text="a dog runs")]
    kept = policy.sample(prompts, 6, max_new_tokens=8, generator=torch.Generator().manual_seed(1),
                         keep_distributions=True)
    assert kept.distributions is not None
    ratio_kept, exact_kept = ew.sequence_kls(policy, reference, kept, chunk=5)
    kept.distributions = None
    ratio, exact = ew.sequence_kls(policy, reference, kept, chunk=5)
    assert exact.min() > 0 and exact.max() > 0.1
    assert torch.allclose(exact_kept, exact, atol=1e-4) and torch.allclose(ratio_kept, ratio, atol=1e-4)

    sampling = EvalSamplingConfig(max_new_tokens=8)
    assert ew.keeps_distributions(policy, sampling, rows=64)
    assert not ew.keeps_distributions(policy, sampling, rows=ew.KEPT_DISTRIBUTIONS_BYTES // (8 * policy.vocab_size))
    assert not ew.keeps_distributions(policy, EvalSamplingConfig(max_new_tokens=8, top_k=5), rows=64)
