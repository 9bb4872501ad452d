"""``export_report.json`` / ``export_report.md``: what was exported and how close it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmalign.utils.atomic import atomic_write_text

REPORT_JSON = "export_report.json"
REPORT_MD = "export_report.md"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Export report: {report['format']} {report['quant']}", "",
             f"- source: `{report['source']}`",
             f"- files: {', '.join(f'`{k}` ({v:,} B)' for k, v in report['files'].items())}",
             f"- model size: {report['size_bytes']:,} B = {report['size_ratio_vs_fp32']:.1%} of fp32 "
             f"({report['fp32_bytes']:,} B for {report['num_parameters']:,} parameters)", ""]
    parity = report.get("parity")
    if parity:
        lines += ["| metric | value |", "|---|---|"]
        for key in ("prompts", "new_tokens", "teacher_forced_agreement", "mean_kl", "kl_max", "logit_rel_err_max",
                    "logit_rel_err_mean", "greedy_prompts", "greedy_agreement", "strict_agreement", "divergences",
                    "divergence_margin_max", "tokens_per_s", "reference_tokens_per_s", "runtime", "reference_runtime"):
            if key in parity:
                lines.append(f"| {key} | {_fmt(parity[key])} |")
        floor = report.get("parity_floor")
        if floor and floor.get("teacher_forced_agreement_min") is not None:
            verdict = "passed" if floor["passed"] else f"FAILED ({floor['why']}); kept on request"
            lines += ["", f"Parity floor for {report['quant']}: teacher-forced top-1 >= "
                      f"{floor['teacher_forced_agreement_min']:.0%} and mean KL <= {floor['mean_kl_max']:g}: {verdict}."]
        lines += ["", "Teacher-forced top-1 and mean KL are measured on every prompt over PyTorch's greedy "
                  "continuation; greedy_prompts = how many prompts were also compared free-running (-1: all).",
                  "", "Relative logit error = max|Δlogits| / max|logits_ref| per prompt (teacher-forced on "
                  "prompt + reference greedy continuation); greedy agreement = share of positions where the "
                  "greedy outputs (stopping at EOS) equal PyTorch's; strict agreement = the same over all P×T "
                  "free-running positions, past EOS too; divergences = prompts whose free-running output left PyTorch's, "
                  "divergence_margin_max = PyTorch's largest top-1 minus top-2 logit margin where one first left it "
                  "(near 0: near-tie flips); mean KL = mean KL(p_ref ‖ p_exported) of the next-token "
                  "distributions over the teacher-forced continuation (nats)."]
    else:
        lines.append("Verification skipped.")
    return "\n".join(lines) + "\n"


def write_report(directory: Path, report: dict[str, Any]) -> None:
    atomic_write_text(directory / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    atomic_write_text(directory / REPORT_MD, render_markdown(report))
