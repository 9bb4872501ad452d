"""A shortened `make demo`: every stage of the main job runs and the report is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_demo_writes_report(tmp_path):
    work = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/demo.py"), "--quick", "--work", str(work)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = work / "runs" / "winrate-bo4"
    results = json.loads((run / "results.json").read_text())
    assert [w["label"] for w in results["win_rates"]] == ["standard", "best-of-4"]
    # --quick's overrides reach the evaluation: 4 prompts, the configured procedures
    assert [(w["num_prompts"], w["n"], len(w["per_prompt"])) for w in results["win_rates"]] == [(4, 1, 4), (4, 4, 4)]
    report = (run / "report.md").read_text()
    assert "95% interval" in report and "KL" in report
    assert (run / "winrate_vs_kl_bon4.png").stat().st_size > 1000
    assert (work / "runs" / "ctrl-bo4" / "final").is_dir()
    assert "Report:" in proc.stdout
