"""Write an MMLU evaluation: ``results.json``, ``report.md`` and ``predictions.jsonl``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmalign.utils.atomic import atomic_write_text


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(result: dict[str, Any]) -> str:
    """JSON text (non-finite numbers become null)."""
    return json.dumps(_clean(result), indent=2, ensure_ascii=False) + "\n"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.2f}"


def _pp(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:+.2f}"


def markdown(result: dict[str, Any]) -> str:
    """A readable report: settings, then overall / category / subject tables, then the comparison."""
    cfg = result["config"]
    metric2 = "acc_norm" if "acc_norm" in result["overall"] else "greedy_acc"
    lines = [f"# MMLU evaluation: {result['model']}", "",
             f"mode `{cfg['mode']}`, {cfg['shots']}-shot, split `{cfg['split']}`, data `{cfg['data']}`"]
    if cfg["mode"] != "loglik":
        tau = result.get("tau")
        lines.append(f"CoT@{result.get('k')}" + (f", tau = {tau:.3f}" if tau is not None else "")
                     + f", CoT answer used for {_pct(result.get('cot_share_used'))}% of questions")
    lines += ["", f"| group | n | acc (%) | ± stderr | {metric2} (%) |", "|---|---:|---:|---:|---:|"]

    def row(name: str, t: dict[str, Any]) -> str:
        return f"| {name} | {t['n']} | {_pct(t['acc'])} | {_pct(t['acc_stderr'])} | {_pct(t[metric2])} |"

    lines.append(row("**overall**", result["overall"]))
    lines += [row(f"category: {c}", t) for c, t in result["categories"].items()]
    lines += [row(s, t) for s, t in result["subjects"].items()]
    if "compare" in result:
        lines += ["", compare_markdown(result["compare"])]
    return "\n".join(lines) + "\n"


def compare_markdown(cmp: dict[str, Any]) -> str:
    """The alignment-tax table: before, after, difference and its 95% intervals (percentage points)."""
    lines = [f"## Alignment tax: `{cmp['before']}` → `{cmp['after']}`", "",
             "| subject | n | before (%) | after (%) | diff (pp) | normal 95% CI | paired bootstrap 95% CI |",
             "|---|---:|---:|---:|---:|---|---|"]

    def row(name: str, d: dict[str, Any]) -> str:
        return (f"| {name} | {d['n']} | {_pct(d['before'])} | {_pct(d['after'])} | {_pp(d['diff'])} | "
                f"[{_pp(d['normal_low'])}, {_pp(d['normal_high'])}] | [{_pp(d['boot_low'])}, {_pp(d['boot_high'])}] |")

    lines.append(row("**overall**", cmp["overall"]))
    lines += [row(s, d) for s, d in cmp["subjects"].items()]
    return "\n".join(lines)


def write_outputs(out: Path, result: dict[str, Any], evals: Sequence[Any]) -> None:
    """``results.json``, ``report.md``, ``predictions.jsonl`` (and ``compare.{json,md}``) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", to_json(result))
    atomic_write_text(out / "report.md", markdown(result))
    lines = []
    for ev in evals:
        for subject, rows in ev.records.items():
            for rec in rows:
                lines.append(json.dumps(_clean({"model": ev.model, "subject": subject, **rec}), ensure_ascii=False))
    atomic_write_text(out / "predictions.jsonl", "\n".join(lines) + "\n")
    if "compare" in result:
        atomic_write_text(out / "compare.json", to_json(result["compare"]))
        atomic_write_text(out / "compare.md", compare_markdown(result["compare"]) + "\n")
