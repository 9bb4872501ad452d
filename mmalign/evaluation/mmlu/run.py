"""Evaluate a model on MMLU-style data in one of three modes and write the report.

``loglik`` is lm-eval's k-shot log-likelihood scoring; ``cot`` is CoT@k majority vote; ``ur-cot`` is
Gemini's uncertainty-routed CoT@k (see :mod:`mmalign.evaluation.mmlu.cot`). With ``compare`` the
same evaluation runs on a second model and the per-question differences are reported. A model is
a path (loaded by the policy factory, :func:`mmalign.models.loading.load_policy`: a checkpoint, a
LoRA adapter, an ONNX / GGUF export, a ``.gguf`` file) or a loaded policy; either way it is scored
and sampled through the Policy's scoring interface only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmalign.errors import DataError
from mmalign.evaluation.mmlu.cot import (
    RoutedItem,
    extract_answer,
    route,
    sample_texts,
    tune_tau,
    vote,
)
from mmalign.evaluation.mmlu.data import MMLUData, load_mmlu
from mmalign.evaluation.mmlu.metrics import aggregate, paired_difference
from mmalign.evaluation.mmlu.prompts import cot_prompt
from mmalign.evaluation.mmlu.scorer import QuestionResult, score_loglik
from mmalign.utils.progress import echo, progress

_RECORD_KEY = {"acc": "correct", "acc_norm": "correct_norm", "greedy_acc": "greedy_correct"}


@dataclass
class ModelEval:
    """One model's evaluation: per-question records and the aggregated tables."""

    model: str
    records: dict[str, list[dict[str, Any]]]  # subject -> per-question records (with "correct")
    tables: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _records(results: dict[str, list[QuestionResult]]) -> dict[str, list[dict[str, Any]]]:
    return {s: [{"index": r.index, "answer": r.answer, "lls": r.lls, "pred": r.pred, "pred_norm": r.pred_norm,
                 "greedy": r.pred, "correct": r.acc, "correct_norm": r.acc_norm} for r in rs]
            for s, rs in results.items()}


def _cot_answers(policy: Any, data: MMLUData, split: str, subjects: list[str], limit: int | None, cfg: Any,
                 desc: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for subject in progress(subjects, desc=desc):
        qs = data.get(split, subject)[:limit] if limit else data.get(split, subject)
        texts = sample_texts(policy, [cot_prompt(q) for q in qs], cfg.k, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, top_p=cfg.top_p)
        rows = []
        for ts in texts:
            answers = [extract_answer(t) for t in ts]
            majority, share = vote(answers)
            rows.append({"answers": answers, "majority": majority, "share": share, "texts": ts})
        out[subject] = rows
    return out


def open_model(model: Any, cfg: Any, key: str = "model") -> Any:
    """``model`` itself if it is a loaded policy, else the policy the factory loads from the path
    (device and dtype from ``cfg.run``, ``auto`` dtype meaning float32 as lm-eval; prompts as raw
    text, lm-eval's convention, so no chat template)."""
    if not isinstance(model, (str, Path)):
        return model
    from mmalign.models.loading import load_policy

    device = cfg.run.device if cfg.run.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = cfg.run.dtype if cfg.run.dtype != "auto" else "float32"
    return load_policy(str(model), device=device, dtype=dtype, chat_template="off", key=key)


def evaluate_model(model: Any, cfg: Any, data: MMLUData, subjects: list[str], *, label: str = "",
                   key: str = "model") -> ModelEval:
    """Evaluate ``model`` (a path or a loaded policy) per ``cfg`` on ``subjects``."""
    start = time.perf_counter()
    policy = open_model(model, cfg, key)
    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    stats: dict[str, int] = {}
    greedy = score_loglik(policy, data, subjects, shots=cfg.shots, split=cfg.split, limit=cfg.limit,
                          batch_size=cfg.batch_size, desc=f"mmlu {label}".strip(), shared_prefix=cfg.prefix_cache,
                          add_bos_token=cfg.add_bos_token, stats=stats)
    records = _records(greedy)
    extra: dict[str, Any] = {"max_length": policy.max_length, "scoring_stats": stats}
    metrics = ("acc", "acc_norm")
    if cfg.mode != "loglik":
        torch.manual_seed(cfg.run.seed)
        cot = _cot_answers(policy, data, cfg.split, subjects, cfg.limit, cfg.cot, f"cot@{cfg.cot.k} {label}".strip())
        tau = cfg.cot.tau
        if cfg.mode == "ur-cot" and tau is None:
            tau, grid = _tune(policy, data, subjects, cfg)
            extra["tau_grid"] = grid
        extra.update({"k": cfg.cot.k, "tau": tau, "temperature": cfg.cot.temperature})
        used = 0
        for subject, rows in records.items():
            for rec, c in zip(rows, cot[subject]):
                rec.update({"cot_answers": c["answers"], "majority": c["majority"], "share": c["share"],
                            "greedy_correct": rec["correct"]})
                if cfg.mode == "cot":
                    pred, via_cot = c["majority"], True
                else:
                    pred, via_cot = route(rec["greedy"], c["answers"], tau)
                used += via_cot
                rec.update({"pred": pred, "used_cot": via_cot, "correct": float(pred == rec["answer"])})
        n = sum(len(r) for r in records.values())
        extra["cot_share_used"] = used / n if n else math.nan
        metrics = ("acc", "greedy_acc")
    tables = aggregate({s: {m: [r[_RECORD_KEY[m]] for r in rows] for m in metrics} for s, rows in records.items()},
                       metrics)
    return ModelEval(name, records, tables, extra, time.perf_counter() - start)


def _check_tune_split(data: MMLUData, subjects: list[str], cfg: Any) -> None:
    split = cfg.cot.tune_split
    missing = [s for s in subjects if not data.get(split, s)]
    if missing:
        raise DataError(f"{data.expected_file(split, missing[0])}: ur-cot tunes tau on the '{split}' split, "
                        f"which subject '{missing[0]}' lacks (or set cot.tau)")


def _tune(policy: Any, data: MMLUData, subjects: list[str], cfg: Any) -> tuple[float, list]:
    split = cfg.cot.tune_split
    greedy = score_loglik(policy, data, subjects, shots=cfg.shots, split=split, batch_size=cfg.batch_size,
                          desc=f"mmlu {split}", shared_prefix=cfg.prefix_cache, add_bos_token=cfg.add_bos_token)
    cot = _cot_answers(policy, data, split, subjects, None, cfg.cot, f"cot@{cfg.cot.k} {split}")
    items = [RoutedItem(r.pred, c["answers"], r.answer) for s in subjects for r, c in zip(greedy[s], cot[s])]
    return tune_tau(items, cfg.cot.k)


def run_mmlu(cfg: Any, policy: Any = None, compare_policy: Any = None) -> dict[str, Any]:
    """Evaluate ``cfg.model`` (or ``policy``) and optionally ``cfg.compare``; write ``cfg.out``."""
    data = load_mmlu(cfg.data)
    subjects = data.select(cfg.subjects or None, cfg.split)
    data.check_shots(subjects, cfg.shots)
    if cfg.mode == "ur-cot" and cfg.cot.tau is None:
        _check_tune_split(data, subjects, cfg)
    before = evaluate_model(policy if policy is not None else cfg.model, cfg, data, subjects, label="before" if cfg.compare else "")
    result: dict[str, Any] = {"config": _settings(cfg), "model": before.model, **before.tables, **before.extra,
                              "seconds": round(before.seconds, 3)}
    evals = [before]
    if cfg.compare or compare_policy is not None:
        after = evaluate_model(compare_policy if compare_policy is not None else cfg.compare, cfg, data, subjects,
                               label="after", key="compare")
        evals.append(after)
        result["compare"] = compare(before, after, bootstrap=cfg.bootstrap, seed=cfg.run.seed)
    if cfg.out:
        from mmalign.evaluation.mmlu.report import write_outputs

        write_outputs(Path(cfg.out), result, evals)
        echo(f"wrote {cfg.out}")
    return result


def compare(before: ModelEval, after: ModelEval, *, bootstrap: int, seed: int) -> dict[str, Any]:
    """Per-subject and overall paired differences (after - before) of per-question correctness."""
    out: dict[str, Any] = {"before": before.model, "after": after.model, "subjects": {}}
    all_b, all_a = [], []
    for subject, rows in before.records.items():
        b = [r["correct"] for r in rows]
        a = [r["correct"] for r in after.records[subject]]
        out["subjects"][subject] = paired_difference(b, a, bootstrap=bootstrap, seed=seed)
        all_b += b
        all_a += a
    out["overall"] = paired_difference(all_b, all_a, bootstrap=bootstrap, seed=seed)
    return out


def _settings(cfg: Any) -> dict[str, Any]:
    keys = ("model", "compare", "data", "shots", "split", "limit", "batch_size", "mode", "subjects")
    d = {k: getattr(cfg, k) for k in keys}
    if cfg.mode != "loglik":
        d["cot"] = asdict(cfg.cot)
    return json.loads(json.dumps(d, default=str))
