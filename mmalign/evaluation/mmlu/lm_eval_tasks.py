"""Run the same MMLU data through lm-evaluation-harness, offline, for side-by-side checks.

:func:`write_lm_eval_tasks` writes, per subject, the dev/test questions as JSONL in the cais/mmlu
layout and a task YAML that ``include``s lm-eval's own ``tasks/mmlu/default/_default_template_yaml``
(so prompt and scoring come from lm-eval itself), pointing ``dataset_path: json`` at the local files
and adding ``acc_norm``. :func:`run_lm_eval_hf` runs them with lm-eval's ``hf`` model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mmalign.evaluation.mmlu.data import MMLUData
from mmalign.evaluation.mmlu.prompts import description

TASK_PREFIX = "mmalign_mmlu_"


def _template_path() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent / "mmlu" / "default" / "_default_template_yaml"


def write_lm_eval_tasks(data: MMLUData, subjects: Sequence[str], out: str | Path, *, split: str = "test") -> list[str]:
    """Write task files for ``subjects`` under ``out``; returns the task names."""
    out = Path(out)
    names = []
    for subject in subjects:
        files = {}
        for name, s in (("dev", "dev"), ("test", split)):
            path = out / "data" / f"{subject}_{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [{"question": q.question, "subject": q.subject, "choices": list(q.choices), "answer": q.answer}
                    for q in data.get(s, subject)]
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            if rows:
                files[name] = str(path.resolve())
        task = {
            "include": str(_template_path()),
            "task": TASK_PREFIX + subject,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
            "description": description(subject),
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        }
        (out / f"{TASK_PREFIX}{subject}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True, sort_keys=False), encoding="utf-8")
        names.append(TASK_PREFIX + subject)
    return names


def run_lm_eval_hf(model_dir: str | Path, task_dir: str | Path, tasks: Sequence[str], *, shots: int,
                   batch_size: int = 1, dtype: str = "float32", limit: int | None = None,
                   log_samples: bool = True) -> dict[str, Any]:
    """``lm_eval.simple_evaluate(model="hf", ...)`` offline on the written tasks."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype={dtype},device=cpu",
        tasks=list(tasks),
        num_fewshot=shots,
        batch_size=batch_size,
        limit=limit,
        task_manager=tm,
        log_samples=log_samples,
        bootstrap_iters=1000,  # mean_stderr is closed-form; no resampling happens
    )


def lm_eval_predictions(results: dict[str, Any], task: str) -> list[tuple[int, int, list[float]]]:
    """Per test question (in file order): ``(pred, pred_norm, lls)`` from ``log_samples`` output."""
    import numpy as np

    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    out = []
    for s in samples:
        lls = [float(r[0]) for r in s["filtered_resps"]]
        out.append((int(np.argmax(lls)), int(np.argmax(np.array(lls) / 1.0)), lls))
    return out
