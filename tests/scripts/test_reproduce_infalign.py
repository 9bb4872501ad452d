"""`scripts/reproduce_infalign.py --quick`: the whole InfAlign study, tiny, end to end.

Slow (about 3-4 minutes on 2 CPU cores): run with `pytest -m slow tests/scripts/test_reproduce_infalign.py`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "reproduce_infalign.py"
LABELS = {"raw": "raw RLHF", "ctrl-identity": "CTRL-identity", "ctrl-exp": "CTRL-exp (bo4)",
          "bond": "BOND/vBoN (bo4)", "ctrl-neg-exp": "CTRL-neg_exp (wo4)"}


def _run(out: Path, doc: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), MPLBACKEND="Agg",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--doc", str(doc), *extra],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows (cells) of the first markdown table after ``heading``."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _eval(out: Path, prompt_set: str, run: str) -> dict:
    return json.loads((out / "eval" / prompt_set / run / "results.json").read_text())


@pytest.mark.slow
def test_quick_study_writes_doc_tables_plots_and_results(tmp_path: Path) -> None:
    from mmalign.align import evaluate, get_procedure, get_transform, robust_t

    out, doc = tmp_path / "study", tmp_path / "doc" / "infalign_bundled.md"
    proc = _run(out, doc, tmp_path)
    results = json.loads((doc.parent / "infalign_bundled" / "results.json").read_text())
    assert set(results) >= {"info", "timings_s", "points", "aggregates", "comparisons", "verdicts"}
    points = {p["method"]: p for p in results["points"]}
    assert set(points) == set(LABELS) and len(results["points"]) == len(LABELS)  # 1 budget x 1 seed

    # one calibration store for the whole study, none per run
    assert (out / "runs/calibration.safetensors").exists()
    assert not list((out / "runs").glob("*/calibration.safetensors"))

    # both prompt sets, judged alike: held-out rows come after the training rows, same eval seed
    for p in points.values():
        snaps = {s: yaml.safe_load((out / "eval" / s / p["run"] / "config.yaml").read_text()) for s in ("train", "heldout")}
        assert snaps["train"]["prompts"]["skip_rows"] == 0 and snaps["heldout"]["prompts"]["skip_rows"] == 64
        assert snaps["train"]["run"]["seed"] == snaps["heldout"]["run"]["seed"]
        assert snaps["train"]["selection_reward"] == snaps["heldout"]["selection_reward"]
    assert len({yaml.safe_load((out / "eval/train" / p["run"] / "config.yaml").read_text())["run"]["seed"]
                for p in points.values()}) == 1

    # the ideal tilt the script recomputes is the transform the trainer used (its summary line)
    # transform.name auto trains with robust_t at the schema's default tolerance
    from mmalign.config.schemas.align import TransformConfig

    tol = TransformConfig().t_tolerance
    t_bon, t_won = robust_t("bon", 4, 0.5, tol).transform, robust_t("won", 4, 0.5, tol).transform
    assert points["ctrl-exp"]["ideal_tilt"] == t_bon.describe()
    assert points["ctrl-neg-exp"]["ideal_tilt"] == t_won.describe()
    assert f"ctrl-exp-kl0.5-s0: 3 steps ({t_bon.describe()}," in proc.stdout
    assert f"ctrl-neg-exp-kl0.5-s0: 3 steps ({t_won.describe()}," in proc.stdout
    assert points["bond"]["ideal_tilt"] == "log" and points["raw"]["ideal_tilt"] == "identity"

    # captured fraction = (W - 0.5) / (W_analytic(measured KL) - 0.5), at the deployment procedure
    for method, transform, (name, n) in (("ctrl-identity", get_transform("identity"), ("standard", 1)),
                                         ("ctrl-exp", t_bon, ("bon", 4)), ("ctrl-neg-exp", t_won, ("won", 4))):
        res = _eval(out, "train", points[method]["run"])
        w = next(x["win_rate"] for x in res["win_rates"] if x["procedure"] == name)
        got = points[method]["evals"]["train"]["captured"]["deploy"]
        if res["kl"] < 1e-3:
            assert got is None
        else:
            w_an = evaluate(transform, get_procedure(name, n), res["kl"]).win_rate
            assert got == pytest.approx((w - 0.5) / (w_an - 0.5), rel=1e-9)

    # paired comparisons: mean per-prompt difference of the two runs' own per-prompt win rates
    assert len(results["comparisons"]) == 8  # 4 comparisons x 2 prompt sets x 1 budget
    for c in results["comparisons"]:
        ra, rb = (_eval(out, c["prompt_set"], points[m]["run"]) for m in (c["a"], c["b"]))
        pa, pb = ([x for x in r["win_rates"] if x["procedure"] == c["procedure"]][0]["per_prompt"] for r in (ra, rb))
        assert c["prompts"] == len(pa) == len(pb) == 8
        assert c["difference"] == pytest.approx(sum(a - b for a, b in zip(pa, pb)) / len(pa), abs=1e-4)
        assert c["kl_matched"] == (abs(ra["kl"] / rb["kl"] - 1) <= 0.1 if rb["kl"] > 0 else False)

    # verdicts follow from the comparisons (one budget: the claim needs it at that budget)
    by = {(c["a"], c["b"], c["procedure"], c["prompt_set"]): c for c in results["comparisons"]}
    for v in results["verdicts"]:
        assert v["status"] in ("holds", "does not hold")
        if v["claim"].startswith("CTRL-exp beats"):
            cs = [by[("ctrl-exp", b, "bon", v["prompt_set"])] for b in ("ctrl-identity", "raw")]
            assert (v["status"] == "holds") == all(c["kl_matched"] and c["ci_low"] > 0 for c in cs)

    # the doc: command, timing, one row per method in each results table, plots, no machine paths
    text = doc.read_text()
    assert "python scripts/reproduce_infalign.py --quick" in text and "QUICK" in text
    minutes = re.search(r"took (\d+\.\d) compute minutes", text)
    assert minutes and float(minutes.group(1)) > 0
    for heading in ("## Results on the training prompts", "## Results on the held-out prompts"):
        rows = _table(text, heading)
        assert sorted(r[0] for r in rows) == sorted(LABELS.values())
        assert all(r[1] == "0.5" and r[2] == "1" for r in rows)
    train_rows = {r[0]: r for r in _table(text, "## Results on the training prompts")}
    assert train_rows["CTRL-exp (bo4)"][7] == t_bon.describe()
    kl_id = points["ctrl-identity"]["evals"]["train"]["kl"]
    assert train_rows["CTRL-identity"][3] == f"{kl_id:.3f}"
    assert len(_table(text, "## Paired comparisons")) == 8
    assert text.count("**HOLDS**") + text.count("**DOES NOT HOLD**") == len(results["verdicts"])
    for name in ("standard_winrate_vs_kl.png", "bon4_winrate_vs_kl.png", "won4_winrate_vs_kl.png"):
        png = doc.parent / "infalign_bundled" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(infalign_bundled/{name})" in text
    assert str(tmp_path) not in text and "/tmp" not in text

    # rerun, two runs at a time (subprocesses): finished runs are reused, a run whose snapshot no
    # longer matches is rerun (with its evaluations), and a hand-written reading is kept
    doc.write_text(text.replace("<!-- reading:begin -->\n", "<!-- reading:begin -->\nMy reading.\n"))
    snap = out / "runs" / points["raw"]["run"] / "config.yaml"
    snap.write_text(snap.read_text().replace("seed: 0", "seed: 7", 1))
    before = {m: p["evals"]["train"]["kl"] for m, p in points.items() if m != "raw"}
    proc = _run(out, doc, tmp_path, "--jobs", "2")
    assert "reusing the study's SFT reference" in proc.stdout
    aligned = re.findall(r"\$ mmalign align configs/reproduce/(\S+)\.yaml", proc.stdout)
    assert aligned == ["raw"], aligned
    assert len(re.findall(r"\$ mmalign evaluate winrate", proc.stdout)) == 2
    assert proc.stdout.count("reusing ") >= 1 + 4 + 8
    assert "My reading." in doc.read_text()
    again = json.loads((doc.parent / "infalign_bundled" / "results.json").read_text())
    assert [p["method"] for p in again["points"]] == [p["method"] for p in results["points"]]  # the study's order
    assert {p["method"]: p["evals"]["train"]["kl"] for p in again["points"] if p["method"] != "raw"} == before
    assert again["info"]["jobs"] == 2 and "--jobs 2" in again["info"]["command"]
    assert "raw reward's spread" in doc.read_text()  # raw RLHF's initial beta rule
