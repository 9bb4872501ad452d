"""Run the real ``align`` recipe (through the CLI) on a multimodal checkpoint, for the tests that
used to drive a hand-written copy of the CTRL step: the recipe is what users run."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def code_points(prompts, responses):
    """The mean code point of a response: different texts almost always score differently, so a
    prompt's samples are not all tied after calibration (a tie gives every sample advantage 0)."""
    return [sum(map(ord, r)) / max(1, len(r)) for r in responses]


def write_prompts(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def align(run_cli, tmp_path: Path, model: Path, prompts: Path, *, reward: dict | None = None,
          include: Path | None = None, name: str = "align-mm", steps: int = 1, **sections) -> Path:
    """``mmalign align`` for ``steps`` CTRL-log steps on ``model`` over ``prompts``; returns the run
    directory. ``reward`` is a ``reward:`` section, or ``include`` a config file that has one."""
    cfg = {
        "recipe": "align",
        "run": {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 0, "device": "cpu", "dtype": "float32"},
        "model": {"path": str(model)},
        "data": {"path": str(prompts)},
        "calibration": {"num_samples": 8, "batch_prompts": 8},
        "transform": {"name": "log", "procedure": "bon", "n": 4},
        "rollout": {"prompts_per_step": 2, "n": 4, "max_new_tokens": 4},
        "kl": {"estimator": "k1", "mode": "reward", "beta": 0.05, "controller": "fixed"},
        "advantage": {"estimator": "rloo"},
        "train": {"steps": steps, "lr": 1e-3, "max_grad_norm": 1.0},
        "checkpoint": {"every": steps, "keep": 1},
    }
    if include is not None:
        cfg = {"include": str(include), **cfg}
    if reward is not None:
        cfg["reward"] = reward
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    code, _, err = run_cli("align", str(path), "--quiet")
    assert code == 0, err
    return tmp_path / "runs" / name


def python_reward(name: str) -> dict:
    return {"kind": "python", "function": f"{HERE / 'recipe_runs.py'}:{name}"}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
