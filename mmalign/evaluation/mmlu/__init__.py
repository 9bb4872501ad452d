"""MMLU-style evaluation: lm-eval-exact log-likelihood scoring, CoT@k and uncertainty-routed CoT@k,
before/after comparisons, and an lm-eval adapter for mmalign policies."""

from mmalign.evaluation.mmlu.data import MMLUData, Question, load_mmlu
from mmalign.evaluation.mmlu.run import compare, evaluate_model, run_mmlu

__all__ = ["MMLUData", "Question", "compare", "evaluate_model", "load_mmlu", "run_mmlu"]
