"""Accuracy, standard errors and paired differences, with lm-evaluation-harness's conventions.

* Per subject: ``acc`` is the mean of 0/1 correctness; ``acc_stderr`` is the sample standard error
  of the mean, ``sqrt(sum((x - mean)^2) / (n - 1)) / sqrt(n)`` (``lm_eval.api.metrics.mean_stderr``).
* Groups (category, overall): ``acc`` is the size-weighted mean of the members (= micro average
  over questions); ``acc_stderr`` is lm-eval's ``pooled_sample_stderr`` over the members, where a
  category pools its subjects and "overall" pools the categories (lm-eval's ``mmlu`` group pools
  ``mmlu_stem``, ``mmlu_humanities``, ...).
* Paired differences (after - before on the same questions): mean difference with a normal
  interval ``mean +- 1.96 * sd(d)/sqrt(n)`` and a percentile paired-bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from mmalign.evaluation.mmlu.categories import category_of
from mmalign.evaluation.stats import bootstrap_ci

Z95 = 1.959963984540054


def mean_stderr(xs: Sequence[float]) -> float:
    """lm-eval's ``mean_stderr`` (nan for fewer than two items, where lm-eval reports N/A)."""
    n = len(xs)
    if n < 2:
        return math.nan
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def pooled_sample_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's ``pooled_sample_stderr``: pooled variance of the members over the total size."""
    total = sum(sizes)
    if len(sizes) == 1:
        return float(stderrs[0])
    if total - len(sizes) <= 0 or any(math.isnan(s) for s in stderrs):
        return math.nan
    var = sum((n - 1) * s**2 * n for n, s in zip(sizes, stderrs)) / (total - len(sizes))
    return math.sqrt(var / total)


def summarize(xs: Sequence[float]) -> dict[str, float]:
    return {"n": len(xs), "acc": sum(xs) / len(xs) if xs else math.nan, "acc_stderr": mean_stderr(xs)}


def _group(members: Sequence[Mapping[str, float]], metrics: Sequence[str]) -> dict[str, float]:
    sizes = [int(m["n"]) for m in members]
    out: dict[str, float] = {"n": sum(sizes)}
    for metric in metrics:
        out[metric] = sum(m[metric] * n for m, n in zip(members, sizes)) / sum(sizes)
        out[f"{metric}_stderr"] = pooled_sample_stderr([m[f"{metric}_stderr"] for m in members], sizes)
    return out


def aggregate(per_subject: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str] = ("acc",)) -> dict:
    """``per_subject[subject][metric]`` = 0/1 list -> subjects, categories and overall tables."""
    subjects: dict[str, dict] = {}
    for subject, by_metric in per_subject.items():
        row: dict = {"category": category_of(subject), "n": len(next(iter(by_metric.values())))}
        for metric in metrics:
            xs = list(by_metric[metric])
            row[metric] = sum(xs) / len(xs) if xs else math.nan
            row[f"{metric}_stderr"] = mean_stderr(xs)
        subjects[subject] = row
    categories: dict[str, dict] = {}
    for cat in sorted({r["category"] for r in subjects.values()}):
        categories[cat] = _group([r for r in subjects.values() if r["category"] == cat], metrics)
    overall = _group(list(categories.values()), metrics) if categories else {"n": 0}
    return {"subjects": subjects, "categories": categories, "overall": overall}


def paired_difference(before: Sequence[float], after: Sequence[float], *, bootstrap: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """Mean of ``after - before`` with a normal and a paired-bootstrap 95% interval."""
    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if b.shape != a.shape:
        raise ValueError("paired samples must have the same length")
    d = a - b
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    out = {"n": n, "before": float(b.mean()) if n else math.nan, "after": float(a.mean()) if n else math.nan,
           "diff": mean, "diff_stderr": se, "normal_low": mean - Z95 * se, "normal_high": mean + Z95 * se,
           "boot_low": math.nan, "boot_high": math.nan}
    if bootstrap > 0 and n > 0:
        out["boot_low"], out["boot_high"] = bootstrap_ci(d, reps=bootstrap, seed=seed)
    return out
