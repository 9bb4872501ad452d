"""``mmalign games run|sweep``: artefacts of small runs and one-line errors (exit 2) on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "games"


def _config(tmp_path: Path, body: str = "") -> str:
    path = tmp_path / "games.yaml"
    path.write_text(
        "recipe: games\n"
        f"run: {{name: t, output_dir: {tmp_path / 'runs'}}}\n"
        "train: {seeds: 16, steps: 6, log_every: 2}\n" + body
    )
    return str(path)


def test_run_writes_results_curves_and_plots(tmp_path: Path, run_cli) -> None:
    cfg = _config(tmp_path)
    code, out, err = run_cli("-q", "games", "run", cfg, "learner.name=sos", "policy.semantics=shared")
    assert code == 0, err
    run_dir = tmp_path / "runs" / "t"
    res = json.loads((run_dir / "results.json").read_text())
    s = res["stats"]
    assert s["seeds"] == 16 and abs(sum(s[f"mean_p_{o}"] for o in ("cc", "cd", "dc", "dd")) - 1) < 1e-9
    assert len(res["final_joint"]) == 16 and res["curves"]["step"] == [0, 2, 4, 6]
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 1000
    assert (run_dir / "plots" / "final_outcomes.png").stat().st_size > 1000
    assert (run_dir / "DONE").exists() and len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4
    assert "share_cc=" in out and "results.json" in out
    # a finished run is not overwritten silently
    code, _, err = run_cli("-q", "games", "run", cfg)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_run_is_reproducible_from_the_seed(tmp_path: Path, run_cli) -> None:
    cfg = _config(tmp_path)
    finals = []
    for name in ("a", "b"):
        assert run_cli("-q", "games", "run", cfg, f"run.name={name}", "analysis.plots=false")[0] == 0
        finals.append(json.loads((tmp_path / "runs" / name / "results.json").read_text())["final_joint"])
    assert finals[0] == finals[1]


def test_sweep_writes_one_table_and_dedupes_the_baseline(tmp_path: Path, run_cli) -> None:
    cfg = _config(tmp_path, "sweep:\n  grid:\n    policy.kind: [transparent, mixed]\n"
                            "    policy.epsilon: [0.1, 0.5]\n    learner.name: [naive, lola]\n")
    code, out, err = run_cli("-q", "games", "sweep", cfg)
    assert code == 0, err
    table = (tmp_path / "runs" / "t" / "sweep.md").read_text().splitlines()
    rows = json.loads((tmp_path / "runs" / "t" / "sweep.json").read_text())["rows"]
    assert len(rows) == 6 and len(table) == 2 + 6  # mixed ignores ε: 2 + 2 instead of 4 + 4
    assert {r["kind"] if "kind" in r else r["policy.kind"] for r in rows} == {"transparent", "mixed"}
    assert "6 grid points" in out


def test_shipped_configs_load(run_cli) -> None:
    for path in sorted([*CONFIGS.glob("*.yaml"), *CONFIGS.glob("study/*.yaml")]):
        code, out, err = run_cli("config", "check", str(path))
        assert code == 0, f"{path.name}: {err}"


@pytest.mark.parametrize("overrides,needle", [
    (["game.name=poker"], "game.name"),
    (["policy.epsilon=0"], "policy.epsilon"),
    (["policy.epsilon=1.5"], "policy.epsilon"),
    (["learner.name=adam"], "learner.name"),
    (["policy.semantics=telepathy"], "policy.semantics"),
    (["game.name=custom"], "payoff1"),
    (["game.name=custom", "game.payoff1=[[1,2],[3,4]]", "game.payoff2=[[1,2]]"], "payoff2"),
    (["game.payoff1=[[1,2],[3,4]]"], "payoff1"),
    (["game.name=custom", "game.payoff1=[[.nan,0],[5,1]]", "game.payoff2=[[3,5],[0,1]]"],
     "game.payoff1: payoffs must be finite numbers, got nan"),
    (["run.name=../victim"], "run.name: must be a single directory name"),
    (["train.seeds=0"], "train.seeds"),
    (["learner.lr=-1"], "learner.lr"),
    (["learner.sos_a=2"], "learner.sos_a"),
    (["analysis.threshold=0.3"], "analysis.threshold"),
    (["policy.epsilonn=0.1"], "did you mean"),
    (["run.dtype=bfloat16"], "run.dtype"),
    (["sweep.grid={policy.colour: [1]}"], "cannot sweep"),
    (["sweep.grid={policy.epsilon: []}"], "non-empty"),
])
@pytest.mark.parametrize("verb", ["run", "sweep"])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, run_cli, overrides, needle, verb) -> None:
    code, out, err = run_cli("games", verb, _config(tmp_path), *overrides)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmalign: error:") and needle in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_sweep_grid_value_errors_surface_before_running(tmp_path: Path, run_cli) -> None:
    cfg = _config(tmp_path, "sweep:\n  grid:\n    policy.epsilon: [0.1, 2.0]\n")
    code, _, err = run_cli("games", "sweep", cfg)
    assert code == 2 and "policy.epsilon" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_wrong_recipe_and_missing_file(tmp_path: Path, run_cli) -> None:
    other = tmp_path / "run.yaml"
    other.write_text("recipe: run\nrun: {name: x}\n")
    code, _, err = run_cli("games", "run", str(other))
    assert code == 2 and "expects a 'games' config" in err
    code, _, err = run_cli("games", "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1


def test_overflowing_payoffs_stop_with_one_line_and_no_results(tmp_path: Path, run_cli) -> None:
    huge = ["game.name=custom", "game.payoff1=[[1e308,-1e308],[1e308,-1e308]]",
            "game.payoff2=[[1e308,1e308],[-1e308,-1e308]]"]
    code, out, err = run_cli("-q", "games", "run", _config(tmp_path), *huge)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "games: training diverged at step 0: value" in lines[0], err
    run_dir = tmp_path / "runs" / "t"
    assert not (run_dir / "DONE").exists() and not (run_dir / "results.json").exists()
