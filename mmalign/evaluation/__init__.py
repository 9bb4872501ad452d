"""Evaluation: inference-time win rates, MMLU-style accuracy, reports and plots."""
