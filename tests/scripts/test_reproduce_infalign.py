"""`scripts/reproduce_infalign.py --quick`: the whole InfAlign reproduction, tiny, end to end.

Slow (about 2-3 minutes on 2 CPU cores): run with `pytest -m slow tests/scripts/test_reproduce_infalign.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "reproduce_infalign.py"
LABELS = ("CTRL-exp (bo4)", "CTRL-identity", "raw RLHF", "BOND (bo4)")


@pytest.mark.slow
def test_quick_study_writes_doc_table_and_plots(tmp_path: Path) -> None:
    out, doc = tmp_path / "study", tmp_path / "doc" / "infalign_bundled.md"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), MPLBACKEND="Agg",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--doc", str(doc)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # the study built its own reference and one run + evaluation per method
    assert (out / "runs/sft-nano/final/config.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert sorted(r["label"] for r in rows) == sorted(LABELS)
    for r in rows:
        assert (out / "eval" / f"{r['method']}-kl0.5" / "results.json").exists()
        for key in ("standard", "bo4"):
            w = r[key]
            assert 0.0 <= w["ci_low"] <= w["win_rate"] <= w["ci_high"] <= 1.0
        assert r["kl_se"] >= 0

    # the doc: the regenerate command, the table (one row per method), the plots it links
    text = doc.read_text()
    assert "python scripts/reproduce_infalign.py --quick" in text
    assert "| method | KL target | measured KL ± se | standard win rate [95% CI] | best-of-4 win rate [95% CI]" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "KL target" not in line]
    assert sorted(line.split(" | ")[0][2:] for line in table) == sorted(LABELS)
    for name in ("bo4_winrate_vs_kl.png", "standard_winrate_vs_kl.png"):
        png = doc.parent / "infalign_bundled" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(infalign_bundled/{name})" in text
    assert str(tmp_path) not in text  # no machine paths in the report

    # rerunning reuses the finished runs and keeps a hand-written reading
    text = text.replace("<!-- reading:begin -->\n", "<!-- reading:begin -->\nMy reading.\n")
    doc.write_text(text)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--doc", str(doc)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing" in proc.stdout and "$ mmalign align" not in proc.stdout
    assert "My reading." in doc.read_text()
